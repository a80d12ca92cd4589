//! The browser API (feature `wasm`): a classifier over the weights embedded at build time.
//!
//! Which model runs is fixed at build time by the crate's features: the lean model alone, or
//! the burn model on `flex` or `ndarray`. The JavaScript API is the same for all of them.
//! Every entry point checks its input and answers a wrong one with a JavaScript exception
//! that says what was expected, so no input can reach a panic or a wasm trap.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use wasm_bindgen::prelude::*;

use crate::preprocess::{ink_from_rgba, to_mnist};
use crate::{LoadError, PIXELS, Prediction};

/// The weights this bundle was built from: lean weights for the lean model, a burn record
/// (`artifacts/model.bin`) for burn. `cargo xtask build-web` writes them and names the file.
static WEIGHTS: &[u8] = include_bytes!(env!(
    "INFER_WEIGHTS",
    "set INFER_WEIGHTS to the weights file to embed; `cargo xtask build-web` does"
));

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance)]
    fn now() -> f64;
}

/// Loads the embedded model once; classifies canvases or ready 28x28 images.
#[wasm_bindgen]
pub struct Classifier {
    engine: Engine,
}

#[wasm_bindgen]
impl Classifier {
    #[wasm_bindgen(constructor)]
    pub fn new() -> Result<Classifier, JsError> {
        let engine = Engine::load(WEIGHTS).map_err(|e| JsError::new(&e.to_string()))?;
        Ok(Classifier { engine })
    }

    /// What runs the model, for people to read.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        Engine::NAME.into()
    }

    /// Bytes of weights embedded in this bundle.
    #[wasm_bindgen(getter, js_name = weightBytes)]
    pub fn weight_bytes(&self) -> usize {
        WEIGHTS.len()
    }

    /// Classifies an RGBA buffer (e.g. `ImageData.data` of a canvas), `width` x `height`.
    #[wasm_bindgen(js_name = classifyRgba)]
    pub fn classify_rgba(&self, rgba: &[u8], width: usize, height: usize) -> Result<JsPrediction, JsError> {
        let started = now();
        let ink = ink_from_rgba(rgba, width, height).map_err(|e| JsError::new(&e.to_string()))?;
        let input = to_mnist(&ink, width, height).map_err(|e| JsError::new(&e.to_string()))?;
        Ok(self.finish(&input, started))
    }

    /// Classifies a ready 28x28 grey image (784 bytes, 0 = paper, 255 = ink).
    #[wasm_bindgen(js_name = classifyMnist)]
    pub fn classify_mnist(&self, grey: &[u8]) -> Result<JsPrediction, JsError> {
        let started = now();
        let input: &[u8; PIXELS] = grey
            .try_into()
            .map_err(|_| JsError::new(&alloc::format!("a 28x28 image needs {PIXELS} bytes, got {}", grey.len())))?;
        Ok(self.finish(input, started))
    }

    fn finish(&self, input: &[u8; PIXELS], started: f64) -> JsPrediction {
        let prediction = self.engine.classify(input);
        JsPrediction { prediction, millis: now() - started }
    }
}

#[cfg(not(feature = "burn"))]
struct Engine(crate::lean::LeanModel);

#[cfg(not(feature = "burn"))]
impl Engine {
    const NAME: &str = "lean (infer's own kernels, wasm simd128)";

    fn load(weights: &[u8]) -> Result<Self, LoadError> {
        crate::lean::LeanModel::from_bytes(weights).map(Engine)
    }

    fn classify(&self, input: &[u8; PIXELS]) -> Prediction {
        self.0.classify(input)
    }
}

#[cfg(feature = "burn")]
struct Engine {
    model: crate::Model,
    device: burn::tensor::Device,
}

#[cfg(feature = "burn")]
impl Engine {
    #[cfg(feature = "flex")]
    const NAME: &str = "burn flex (cpu, wasm simd128)";
    #[cfg(not(feature = "flex"))]
    const NAME: &str = "burn ndarray (cpu)";

    fn load(weights: &[u8]) -> Result<Self, LoadError> {
        #[cfg(feature = "flex")]
        let device = burn::tensor::Device::flex();
        #[cfg(not(feature = "flex"))]
        let device = burn::tensor::Device::ndarray();
        Ok(Engine { model: crate::Model::from_bytes(weights, &device)?, device })
    }

    fn classify(&self, input: &[u8; PIXELS]) -> Prediction {
        self.model.classify(input, &self.device)
    }
}

// Without burn nothing links std, so the bundle brings its own allocator and panic handler.
// Inputs are checked before any code that could panic, so a panic is a bug: trap.
#[cfg(all(target_arch = "wasm32", not(feature = "burn")))]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[cfg(all(target_arch = "wasm32", not(feature = "burn")))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// One classification, as JavaScript sees it.
#[wasm_bindgen(js_name = Prediction)]
pub struct JsPrediction {
    prediction: Prediction,
    millis: f64,
}

#[wasm_bindgen(js_class = Prediction)]
impl JsPrediction {
    /// The most probable digit.
    #[wasm_bindgen(getter)]
    pub fn digit(&self) -> usize {
        self.prediction.digit
    }

    /// The ten class probabilities.
    #[wasm_bindgen(getter)]
    pub fn probabilities(&self) -> Vec<f32> {
        self.prediction.probabilities.to_vec()
    }

    /// The 28x28 grey image the model saw.
    #[wasm_bindgen(getter)]
    pub fn input(&self) -> Vec<u8> {
        self.prediction.input.to_vec()
    }

    /// Milliseconds from the call to the answer, preprocessing included.
    #[wasm_bindgen(getter)]
    pub fn millis(&self) -> f64 {
        self.millis
    }
}
