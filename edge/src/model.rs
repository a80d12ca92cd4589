//! The model in this isolate: read from R2 on the first request the isolate serves, then
//! kept for every later one, until the Durable Object's generation says a reload happened.
//!
//! Cloudflare runs as many isolates of the worker as there is load, on every machine that
//! takes requests, so classification scales out with them; each reads R2 once per
//! generation. An isolate trusts its model for [`RECHECK_MS`] before asking the Durable
//! Object again, so a reload reaches every isolate within that time.

use infer::lean::{LeanModel, Weights};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use worker::{Bucket, Env, Method, Request, RequestInit};

use crate::api::{ApiError, ModelInfo, sha256_hex};
use crate::host::Generation;

const BUCKET_BINDING: &str = "MODELS";
/// The object holding the weights: `artifacts/model.bin` as `cargo xtask train` wrote it.
pub const MODEL_KEY: &str = "mnist/model.bin";
/// The Durable Object namespace, and the one object in it that owns the generation.
const HOST_BINDING: &str = "MODEL_HOST";
const HOST_NAME: &str = "mnist";
/// How long an isolate uses its model before asking whether it is still current.
pub const RECHECK_MS: f64 = 5_000.0;

/// A model and what the answers say about it.
pub struct Loaded {
    pub model: LeanModel,
    pub info: ModelInfo,
    generation: u64,
}

/// What this isolate holds.
enum Slot {
    Empty,
    /// A request is reading R2 for this generation since this time; others wait for it.
    Loading {
        generation: u64,
        since: f64,
    },
    /// That read failed: the requests that waited for it get its error.
    Failed {
        generation: u64,
        error: ApiError,
    },
    Ready {
        loaded: Rc<Loaded>,
        checked_at: f64,
    },
}

thread_local! {
    static SLOT: RefCell<Slot> = const { RefCell::new(Slot::Empty) };
    /// Models this isolate has read from R2.
    static LOADS: Cell<u32> = const { Cell::new(0) };
}

/// How often a request waiting for another's load looks again.
const WAIT_MS: u64 = 5;
/// How long a load may take before a waiting request starts its own (the request that was
/// loading may have been cancelled with its client).
const LOAD_TIMEOUT_MS: f64 = 10_000.0;

/// The current model, read from R2 first if this isolate has none or an outdated one.
pub async fn current(env: &Env) -> Result<Rc<Loaded>, ApiError> {
    let now = js_sys::Date::now();
    let held = SLOT.with_borrow(|slot| match slot {
        Slot::Ready { loaded, checked_at } => Some((loaded.clone(), *checked_at)),
        _ => None,
    });
    if let Some((loaded, checked_at)) = &held
        && now - checked_at < RECHECK_MS
    {
        return Ok(loaded.clone());
    }
    match ask_host(env, "/generation").await {
        Ok(generation) => model_of(env, generation).await,
        // The Durable Object not answering does not take away the model an isolate holds: it
        // goes on answering with it, out of date for as long as the object is away.
        Err(error) => held.map(|(loaded, _)| loaded).ok_or(error),
    }
}

/// Moves the generation on and loads the model again here; other isolates follow within
/// [`RECHECK_MS`].
pub async fn reload(env: &Env) -> Result<Rc<Loaded>, ApiError> {
    let generation = ask_host(env, "/admin/reload").await?;
    model_of(env, generation).await
}

enum Next {
    Answer(Result<Rc<Loaded>, ApiError>),
    Wait,
    Load,
}

/// The model of `generation`: the one held if it is of that generation, else the one another
/// request is loading, else one this request loads.
async fn model_of(env: &Env, generation: u64) -> Result<Rc<Loaded>, ApiError> {
    let mut waited = false;
    loop {
        let now = js_sys::Date::now();
        let next = SLOT.with_borrow_mut(|slot| match slot {
            Slot::Ready { loaded, checked_at } if loaded.generation == generation => {
                *checked_at = now;
                Next::Answer(Ok(loaded.clone()))
            }
            Slot::Loading { generation: of, since } if *of == generation && now - *since < LOAD_TIMEOUT_MS => {
                Next::Wait
            }
            Slot::Failed { generation: of, error } if *of == generation && waited => Next::Answer(Err(error.clone())),
            _ => {
                *slot = Slot::Loading { generation, since: now };
                Next::Load
            }
        });
        match next {
            Next::Answer(answer) => return answer,
            // Not by awaiting the loading request's future: the Workers runtime ties I/O to
            // the request that started it, and cancels a request that waits on another's as
            // hung. A timer is this request's own.
            Next::Wait => {
                waited = true;
                worker::Delay::from(Duration::from_millis(WAIT_MS)).await;
            }
            Next::Load => {
                let result = load(env, generation).await;
                SLOT.with_borrow_mut(|slot| {
                    *slot = match &result {
                        Ok(loaded) => Slot::Ready { loaded: loaded.clone(), checked_at: js_sys::Date::now() },
                        Err(error) => Slot::Failed { generation, error: error.clone() },
                    }
                });
                return result;
            }
        }
    }
}

/// A POST to the Durable Object that owns the generation; its answer.
async fn ask_host(env: &Env, path: &str) -> Result<u64, ApiError> {
    let failed = |e: worker::Error| unavailable(format!("the model host did not answer {path}: {e}"));
    let stub =
        env.durable_object(HOST_BINDING).and_then(|ns| ns.id_from_name(HOST_NAME)?.get_stub()).map_err(failed)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post);
    // The host part is not used: a stub's fetch goes to its object.
    let request = Request::new_with_init(&format!("https://model-host{path}"), &init).map_err(failed)?;
    let mut response = stub.fetch_with_request(request).await.map_err(failed)?;
    let answer: Generation = response.json().await.map_err(failed)?;
    Ok(answer.generation)
}

async fn load(env: &Env, generation: u64) -> Result<Rc<Loaded>, ApiError> {
    let started = js_sys::Date::now();
    let bucket: Bucket =
        env.bucket(BUCKET_BINDING).map_err(|e| unavailable(format!("no R2 binding {BUCKET_BINDING}: {e}")))?;
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
    let loads = LOADS.get() + 1;
    LOADS.set(loads);
    let info = ModelInfo {
        sha256: sha256_hex(&bytes),
        loaded_at: String::from(js_sys::Date::new_0().to_iso_string()),
        load_ms: js_sys::Date::now() - started,
        loads,
    };
    Ok(Rc::new(Loaded { model, info, generation }))
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(503, message)
}
