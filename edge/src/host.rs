//! `ModelHost`, the Durable Object that owns the model: loaded from R2 once, on first use,
//! then kept in memory for every request this object serves.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use infer::PIXELS;
use infer::lean::{LeanModel, Weights};
use worker::{Bucket, DurableObject, Env, Request, Response, Result, State, durable_object};

use crate::api::{ApiError, ModelInfo, PredictResponse, sha256_hex};
use crate::worker_entry::json_error;

const BUCKET_BINDING: &str = "MODELS";
/// The object holding the weights: `artifacts/model.bin` as `cargo xtask train` wrote it.
pub const MODEL_KEY: &str = "mnist/model.bin";

struct Loaded {
    model: LeanModel,
    info: ModelInfo,
}

#[durable_object(fetch)]
pub struct ModelHost {
    state: State,
    env: Env,
    loaded: RefCell<Option<Rc<Loaded>>>,
    loads: Rc<Cell<u32>>,
}

impl DurableObject for ModelHost {
    fn new(state: State, env: Env) -> Self {
        ModelHost { state, env, loaded: RefCell::new(None), loads: Rc::new(Cell::new(0)) }
    }

    async fn fetch(&self, mut request: Request) -> Result<Response> {
        // The worker forwards only these two routes, after checking the method, the admin
        // token, and a prediction request (which it turns into the 784 bytes of the input).
        if request.path() == "/admin/reload" {
            self.loaded.borrow_mut().take();
            return match self.model().await {
                Ok(loaded) => Response::from_json(&serde_json::json!({ "reloaded": true, "model": loaded.info })),
                Err(error) => json_error(&error),
            };
        }
        let input: [u8; PIXELS] = match request.bytes().await.ok().and_then(|body| body.try_into().ok()) {
            Some(input) => input,
            None => return json_error(&ApiError::bad_request(format!("the model host takes {PIXELS} bytes"))),
        };
        let loaded = match self.model().await {
            Ok(loaded) => loaded,
            Err(error) => return json_error(&error),
        };
        let prediction = loaded.model.classify(&input);
        Response::from_json(&PredictResponse {
            digit: prediction.digit,
            probabilities: prediction.probabilities,
            model: &loaded.info,
        })
    }
}

impl ModelHost {
    /// The model, loading it first if this object has none. Loading holds back every other
    /// event for this object, so concurrent first requests load it once, not once each.
    async fn model(&self) -> std::result::Result<Rc<Loaded>, ApiError> {
        if let Some(loaded) = self.loaded.borrow().clone() {
            return Ok(loaded);
        }
        let bucket =
            self.env.bucket(BUCKET_BINDING).map_err(|e| unavailable(format!("no R2 binding {BUCKET_BINDING}: {e}")))?;
        let loads = self.loads.clone();
        // The future must not fail: a failing blockConcurrencyWhile resets the object.
        let result = self
            .state
            .block_concurrency_while(async move { Ok(load(bucket, loads).await) })
            .await
            .map_err(|e| unavailable(format!("loading the model failed: {e}")))?;
        let loaded = Rc::new(result?);
        *self.loaded.borrow_mut() = Some(loaded.clone());
        Ok(loaded)
    }
}

async fn load(bucket: Bucket, loads: Rc<Cell<u32>>) -> std::result::Result<Loaded, ApiError> {
    let started = js_sys::Date::now();
    let object = bucket
        .get(MODEL_KEY)
        .execute()
        .await
        .map_err(|e| unavailable(format!("reading {MODEL_KEY} from R2 failed: {e}")))?
        .ok_or_else(|| {
            unavailable(format!("the R2 bucket has no {MODEL_KEY}; upload one (cargo xtask edge dev does)"))
        })?;
    let bytes = match object.body() {
        Some(body) => {
            body.bytes().await.map_err(|e| unavailable(format!("reading {MODEL_KEY} from R2 failed: {e}")))?
        }
        None => Vec::new(),
    };
    let weights = Weights::from_record(&bytes)
        .map_err(|e| unavailable(format!("{MODEL_KEY} in R2 is not a usable model: {e}")))?;
    let model = LeanModel::new(&weights);
    loads.set(loads.get() + 1);
    let info = ModelInfo {
        sha256: sha256_hex(&bytes),
        loaded_at: String::from(js_sys::Date::new_0().to_iso_string()),
        load_ms: js_sys::Date::now() - started,
        loads: loads.get(),
    };
    Ok(Loaded { model, info })
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(503, message)
}
