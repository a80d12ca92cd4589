//! The network: two conv blocks and a three-layer classifier head.

use alloc::{format, vec::Vec};

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor, TensorData, activation::softmax};

use crate::ops::{InferenceOps, Ops};
use crate::{
    BATCH_NORM_EPSILON, CONV_CHANNELS, FEATURES, HIDDEN, IMAGE_SIZE, LoadError, NUM_CLASSES, PIXELS, Prediction,
};

/// The MNIST CNN. Input `[batch, 1, 28, 28]` of [`crate::normalise`]d pixels, output logits.
#[derive(Module, Debug)]
pub struct Model {
    pub(crate) conv1: Conv2d,
    pub(crate) norm1: BatchNorm,
    pub(crate) conv2: Conv2d,
    pub(crate) norm2: BatchNorm,
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
    pub(crate) fc3: Linear,
    relu: Relu,
    /// Before each dense layer but the last; only while training (it holds no weights).
    dropout: Dropout,
}

impl Model {
    /// A freshly initialised model (weights drawn from the device's seeded generator).
    pub fn new(device: &Device) -> Self {
        let conv = |input| Conv2dConfig::new([input, CONV_CHANNELS], [3, 3]).init(device);
        Self {
            conv1: conv(1),
            norm1: BatchNormConfig::new(CONV_CHANNELS).with_epsilon(BATCH_NORM_EPSILON).init(device),
            conv2: conv(CONV_CHANNELS),
            norm2: BatchNormConfig::new(CONV_CHANNELS).with_epsilon(BATCH_NORM_EPSILON).init(device),
            fc1: LinearConfig::new(FEATURES, HIDDEN).init(device),
            fc2: LinearConfig::new(HIDDEN, HIDDEN).init(device),
            fc3: LinearConfig::new(HIDDEN, NUM_CLASSES).init(device),
            relu: Relu::new(),
            dropout: DropoutConfig::new(0.0).init(),
        }
    }

    /// The same model, dropping each input of the first two dense layers with probability
    /// `prob` while training.
    pub fn with_dropout(self, prob: f64) -> Self {
        Self { dropout: DropoutConfig::new(prob).init(), ..self }
    }

    /// Loads weights serialised by [`Model::to_bytes`] (the `model.bin` format).
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self, LoadError> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
            .map_err(|e| LoadError::Format(format!("{e}")))?;
        let model = Self::new(device).try_load_record(record).map_err(|e| LoadError::Shape(format!("{e}")))?;
        if !all_finite(&model) {
            // Such a model answers every image with the same class, confidently.
            return Err(LoadError::Format("a weight is NaN or infinite".into()));
        }
        Ok(model.valid())
    }

    /// Serialises the weights (burn's record bytes), identical for identical weights.
    pub fn to_bytes(self) -> Vec<u8> {
        const IN_MEMORY: &str = "re-encoding an in-memory record cannot fail";
        let bytes = self.into_record().into_bytes().expect(IN_MEMORY);
        // burn draws parameter ids at random and stores them in the record; numbering them in
        // order instead makes the bytes a function of the weights alone.
        let tensors = burn_pack::Reader::from_bytes(bytes)
            .and_then(burn_pack::Reader::into_tensors)
            .expect(IN_MEMORY)
            .into_iter()
            .enumerate()
            .map(|(index, tensor)| {
                let (name, dtype, shape, _random_id, data) = tensor.into_parts().expect(IN_MEMORY);
                burn_pack::Tensor::new(name, dtype, shape, Some(index as u64), data)
            })
            .collect();
        burn_pack::Writer::new(tensors).into_bytes().expect(IN_MEMORY).to_vec()
    }

    /// Logits `[batch, 10]` for normalised images `[batch, 1, 28, 28]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(&InferenceOps, images)
    }

    /// [`Model::forward`] with its convolutions, BatchNorms and GELU + max-pools computed by
    /// `ops` (training's, with their backward passes).
    pub fn forward_with(&self, ops: &impl Ops, images: Tensor<4>) -> Tensor<2> {
        let x = ops.conv2d(&self.conv1, images);
        let x = ops.gelu_max_pool(ops.batch_norm(&self.norm1, x));
        let x = ops.conv2d(&self.conv2, x);
        let x = ops.gelu_max_pool(ops.batch_norm(&self.norm2, x));
        let x = self.dropout.forward(x.flatten(1, 3));
        let x = self.dropout.forward(self.relu.forward(self.fc1.forward(x)));
        let x = self.relu.forward(self.fc2.forward(x));
        self.fc3.forward(x)
    }

    /// Classifies one 28x28 grey image (0 = paper, 255 = ink), e.g. from [`crate::preprocess`].
    pub fn classify(&self, grey: &[u8; PIXELS], device: &Device) -> Prediction {
        let pixels = grey.iter().map(|&g| crate::normalise(g)).collect();
        Prediction::new(self.probabilities(pixels, device)[0], grey)
    }

    /// Class probabilities, one row of ten per image, for `batch` normalised images laid out
    /// row-major (`batch * 784` values).
    pub fn probabilities(&self, pixels: Vec<f32>, device: &Device) -> Vec<[f32; NUM_CLASSES]> {
        rows(self.probability_tensor(pixels, device).into_data())
    }

    /// The probabilities as a `[batch, 10]` tensor still on `device`, for callers that must
    /// read it back asynchronously (WebGPU in a browser).
    pub fn probability_tensor(&self, pixels: Vec<f32>, device: &Device) -> Tensor<2> {
        let batch = pixels.len() / PIXELS;
        assert_eq!(batch * PIXELS, pixels.len(), "input is not a whole number of images");
        let images = Tensor::<4>::from_data(TensorData::new(pixels, [batch, 1, IMAGE_SIZE, IMAGE_SIZE]), device);
        softmax(self.forward(images), 1)
    }
}

/// Whether every weight and running statistic of `model` is a finite number.
fn all_finite(model: &Model) -> bool {
    struct Finite(bool);
    impl ModuleVisitor for Finite {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data();
            self.0 &= data.as_slice::<f32>().is_ok_and(|values| values.iter().all(|v| v.is_finite()));
        }
    }
    let mut finite = Finite(true);
    model.visit(&mut finite);
    finite.0
}

/// Rows of ten from the data of a probability tensor.
pub(crate) fn rows(probabilities: TensorData) -> Vec<[f32; NUM_CLASSES]> {
    let flat = probabilities.as_slice::<f32>().expect("float output");
    flat.chunks_exact(NUM_CLASSES).map(|row| row.try_into().expect("ten classes")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn has_the_seed_architecture_parameter_count() {
        // 260,554 trainable plus BatchNorm's running mean and variance (2 x 2 x 64).
        assert_eq!(Model::new(&Device::flex()).num_params(), 260_810);
    }

    #[test]
    fn maps_a_batch_of_images_to_ten_probabilities_each() {
        let device = Device::flex();
        let model = Model::new(&device).valid();
        let rows = model.probabilities(alloc::vec![0.5; 3 * PIXELS], &device);
        assert_eq!(rows.len(), 3);
        for row in rows {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
        }
    }

    #[test]
    fn weights_survive_a_round_trip_through_bytes() {
        let device = Device::flex();
        let model = Model::new(&device).valid();
        let input = alloc::vec![0.25; PIXELS];
        let before = model.probabilities(input.clone(), &device);
        let loaded = Model::from_bytes(&model.to_bytes(), &device).unwrap();
        assert_eq!(before, loaded.probabilities(input, &device));
    }

    /// fc2's weight with one NaN in it.
    fn model_nan(device: &Device) -> Param<Tensor<2>> {
        let mut values = alloc::vec![0.01f32; HIDDEN * HIDDEN];
        values[HIDDEN + 3] = f32::NAN;
        Param::from_tensor(Tensor::from_data(TensorData::new(values, [HIDDEN, HIDDEN]), device))
    }

    #[test]
    fn refuses_bytes_that_are_not_this_model() {
        let device = Device::flex();
        let garbage = Model::from_bytes(b"not a model at all", &device).unwrap_err();
        assert!(matches!(garbage, LoadError::Format(_)), "{garbage}");

        let bytes = Model::new(&device).to_bytes();
        let truncated = Model::from_bytes(&bytes[..bytes.len() / 2], &device).unwrap_err();
        assert!(matches!(truncated, LoadError::Format(_)), "{truncated}");

        let broken =
            Model { fc2: Linear { weight: model_nan(&device), ..Model::new(&device).fc2 }, ..Model::new(&device) };
        let broken = broken.to_bytes();
        let nan = Model::from_bytes(&broken, &device).unwrap_err();
        assert!(nan.to_string().contains("NaN"), "{nan}");
        let lean = crate::lean::Weights::from_record(&broken).unwrap_err();
        assert!(lean.to_string().contains("fc2.weight holds a NaN"), "{lean}");

        let other = Conv2dConfig::new([1, 8], [3, 3]).init(&device).into_record().into_bytes().unwrap();
        let wrong_shape = Model::from_bytes(&other, &device).unwrap_err();
        assert!(matches!(wrong_shape, LoadError::Shape(_)), "{wrong_shape}");
    }
}
