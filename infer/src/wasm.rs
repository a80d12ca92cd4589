//! The browser API (feature `wasm`): a classifier over the weights embedded at build time.
//!
//! Which model runs is fixed at build time by the crate's features: the lean model alone, or
//! the burn model on `flex`, `ndarray`, or `wgpu` (WebGPU, falling back to flex where the
//! browser has none). The CPU builds answer at once; the WebGPU build is created with
//! `await Classifier.create(useGpu)` and answers with promises, since a browser reads GPU
//! results back asynchronously. Every entry point checks its input and answers a wrong one
//! with a JavaScript exception that says what was expected, so no input can reach a panic or
//! a wasm trap.

use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use wasm_bindgen::prelude::*;

use crate::preprocess::{PreprocessError, canvas_to_mnist, mnist_input};
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
    engine: Rc<Engine>,
}

#[cfg(not(feature = "wgpu"))]
#[wasm_bindgen]
impl Classifier {
    #[wasm_bindgen(constructor)]
    pub fn new() -> Result<Classifier, JsError> {
        let engine = Engine::load(WEIGHTS).map_err(|e| JsError::new(&e.to_string()))?;
        Ok(Classifier { engine: Rc::new(engine) })
    }
}

#[cfg(feature = "wgpu")]
#[wasm_bindgen]
impl Classifier {
    /// Starts on WebGPU when `gpu` is true and the browser grants a device, else on the CPU;
    /// `backend` tells which, and why.
    pub async fn create(gpu: bool) -> Result<Classifier, JsError> {
        let engine = Engine::start(WEIGHTS, gpu).await.map_err(|e| JsError::new(&e.to_string()))?;
        Ok(Classifier { engine: Rc::new(engine) })
    }
}

/// What a classification returns: the prediction, or on WebGPU a promise of it.
#[cfg(not(feature = "wgpu"))]
type Answer = JsPrediction;
#[cfg(feature = "wgpu")]
type Answer = js_sys::Promise;

#[wasm_bindgen]
impl Classifier {
    /// What runs the model, for people to read.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.engine.name().into()
    }

    /// Bytes of weights embedded in this bundle.
    #[wasm_bindgen(getter, js_name = weightBytes)]
    pub fn weight_bytes(&self) -> usize {
        WEIGHTS.len()
    }

    /// Classifies an RGBA buffer (e.g. `ImageData.data` of a canvas), `width` x `height`;
    /// `undefined` when nothing is drawn on it.
    #[wasm_bindgen(js_name = classifyRgba)]
    pub fn classify_rgba(&self, rgba: &[u8], width: usize, height: usize) -> Result<Option<Answer>, JsError> {
        let started = now();
        Ok(canvas_to_mnist(rgba, width, height).map_err(js_error)?.map(|input| self.answer(input, started)))
    }

    /// Classifies a ready 28x28 grey image (784 bytes, 0 = paper, 255 = ink).
    #[wasm_bindgen(js_name = classifyMnist)]
    pub fn classify_mnist(&self, grey: &[u8]) -> Result<Answer, JsError> {
        let started = now();
        Ok(self.answer(mnist_input(grey).map_err(js_error)?, started))
    }
}

/// The 28x28 grey image (784 bytes) an RGBA canvas becomes: what `classifyRgba` classifies,
/// for pages that send it to a model elsewhere (the edge worker); `undefined` when nothing is
/// drawn.
#[wasm_bindgen(js_name = toMnist)]
pub fn to_mnist_js(rgba: &[u8], width: usize, height: usize) -> Result<Option<Vec<u8>>, JsError> {
    Ok(canvas_to_mnist(rgba, width, height).map_err(js_error)?.map(|grey| grey.to_vec()))
}

fn js_error(error: PreprocessError) -> JsError {
    JsError::new(&error.to_string())
}

impl Classifier {
    #[cfg(not(feature = "wgpu"))]
    fn answer(&self, input: [u8; PIXELS], started: f64) -> Answer {
        let prediction = self.engine.classify(&input);
        JsPrediction { prediction, millis: now() - started }
    }

    #[cfg(feature = "wgpu")]
    fn answer(&self, input: [u8; PIXELS], started: f64) -> Answer {
        let engine = self.engine.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let prediction = engine.classify_async(&input).await.map_err(|e| JsError::new(&e))?;
            Ok(JsPrediction { prediction, millis: now() - started }.into())
        })
    }
}

#[cfg(all(not(feature = "burn"), not(feature = "int8-kernels")))]
struct Engine(crate::lean::LeanModel);

#[cfg(all(not(feature = "burn"), not(feature = "int8-kernels")))]
impl Engine {
    fn load(weights: &[u8]) -> Result<Self, LoadError> {
        crate::lean::LeanModel::from_bytes(weights).map(Engine)
    }

    fn name(&self) -> &str {
        "lean (infer's own kernels, wasm simd128)"
    }

    fn classify(&self, input: &[u8; PIXELS]) -> Prediction {
        self.0.classify(input)
    }
}

/// The int8 model over the embedded weights where they lie: no f32 copy of them.
#[cfg(all(not(feature = "burn"), feature = "int8-kernels"))]
struct Engine(crate::lean::Int8Model<'static>);

#[cfg(all(not(feature = "burn"), feature = "int8-kernels"))]
impl Engine {
    fn load(weights: &'static [u8]) -> Result<Self, LoadError> {
        crate::lean::Int8Model::from_bytes(weights).map(Engine)
    }

    fn name(&self) -> &str {
        "lean int8 (int8 weights computed as int8, wasm simd128)"
    }

    fn classify(&self, input: &[u8; PIXELS]) -> Prediction {
        self.0.classify(input)
    }
}

#[cfg(feature = "burn")]
struct Engine {
    model: crate::Model,
    device: burn::tensor::Device,
    name: String,
}

#[cfg(feature = "burn")]
impl Engine {
    #[cfg(not(feature = "wgpu"))]
    fn load(weights: &[u8]) -> Result<Self, LoadError> {
        #[cfg(feature = "flex")]
        let (device, name) = (burn::tensor::Device::flex(), "burn flex (cpu, wasm simd128)");
        #[cfg(not(feature = "flex"))]
        #[allow(deprecated)] // ndarray stays buildable for bench-web's comparison with flex.
        let (device, name) = (burn::tensor::Device::ndarray(), "burn ndarray (cpu)");
        Ok(Engine { model: crate::Model::from_bytes(weights, &device)?, device, name: name.into() })
    }

    #[cfg(feature = "wgpu")]
    async fn start(weights: &[u8], gpu: bool) -> Result<Self, LoadError> {
        use burn::tensor::{Device, wgpu::WgpuBackend};
        let cpu = |why: &str| (Device::flex(), alloc::format!("burn flex (cpu, wasm simd128): {why}"));
        let (device, name) = if gpu {
            match Device::wgpu_options().graphics_api(WgpuBackend::WebGpu).init_async().await {
                Ok(device) => (device, "burn wgpu (WebGPU)".into()),
                Err(e) => cpu(&alloc::format!("WebGPU did not start ({e})")),
            }
        } else {
            cpu("this browser has no WebGPU")
        };
        Ok(Engine { model: crate::Model::from_bytes(weights, &device)?, device, name })
    }

    fn name(&self) -> &str {
        &self.name
    }

    #[cfg(not(feature = "wgpu"))]
    fn classify(&self, input: &[u8; PIXELS]) -> Prediction {
        self.model.classify(input, &self.device)
    }

    #[cfg(feature = "wgpu")]
    async fn classify_async(&self, input: &[u8; PIXELS]) -> Result<Prediction, String> {
        let pixels = input.iter().map(|&g| crate::normalise(g)).collect();
        let probabilities = self.model.probability_tensor(pixels, &self.device);
        let data = probabilities.into_data_async().await.map_err(|e| e.to_string())?;
        Ok(Prediction::new(crate::model::rows(data)[0], input))
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
