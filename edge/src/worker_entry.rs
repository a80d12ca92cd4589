//! The worker's fetch handler: routing, the admin check, reading and checking a prediction
//! request, and forwarding to the Durable Object.
//!
//! A `/predict` body is read (bounded) and preprocessed here, in the stateless worker that
//! the runtime runs as many copies of as there is load; the one Durable Object that holds the
//! model receives only the 784 bytes of the 28x28 input, so no request's size or shape can
//! hold up the requests queued behind it there.

use futures_util::StreamExt;
use worker::{Context, Env, Method, Request, RequestInit, Response, Result, event};

use crate::api::{ApiError, BoundedBody, authorised, parse_predict};

/// The Durable Object namespace and the one object in it that holds the model.
const HOST_BINDING: &str = "MODEL_HOST";
const HOST_NAME: &str = "mnist";

#[event(fetch)]
async fn fetch(mut request: Request, env: Env, _context: Context) -> Result<Response> {
    let path = request.path();
    let allowed = match path.as_str() {
        "/health" => Method::Get,
        "/predict" => Method::Post,
        "/admin/reload" => Method::Post,
        _ => return json_error(&ApiError::new(404, format!("no route {path}"))),
    };
    if request.method() != allowed {
        let mut response = json_error(&ApiError::new(405, format!("{path} takes {allowed}")))?;
        response.headers_mut().set("Allow", allowed.as_ref())?;
        return Ok(response);
    }
    match path.as_str() {
        "/health" => Response::from_json(&serde_json::json!({ "status": "ok" })),
        "/admin/reload" => {
            let token = env.secret("ADMIN_TOKEN").map(|s| s.to_string()).unwrap_or_default();
            if !authorised(request.headers().get("Authorization")?.as_deref(), &token) {
                return json_error(&ApiError::new(
                    401,
                    "reloading the model needs `Authorization: Bearer <ADMIN_TOKEN>`",
                ));
            }
            forward("/admin/reload", None, &env).await
        }
        _ => {
            let input = match read_body(&mut request).await.and_then(|body| parse_predict(&body)) {
                Ok(input) => input,
                Err(error) => return json_error(&error),
            };
            forward("/predict", Some(&input), &env).await
        }
    }
}

/// The body, refused (413) once it is known to pass the limit: from `Content-Length`, or
/// while its chunks arrive.
async fn read_body(request: &mut Request) -> std::result::Result<Vec<u8>, ApiError> {
    let length = request.headers().get("Content-Length").ok().flatten();
    let mut body = BoundedBody::expecting(length.as_deref())?;
    // A request without a body has no stream; it is then an empty body.
    if let Ok(mut chunks) = request.stream() {
        while let Some(chunk) = chunks.next().await {
            body.push(&chunk.map_err(|e| ApiError::bad_request(format!("reading the body failed: {e}")))?)?;
        }
    }
    Ok(body.into_bytes())
}

/// A POST to `path` on the Durable Object that holds the model.
async fn forward(path: &str, body: Option<&[u8]>, env: &Env) -> Result<Response> {
    let stub = env.durable_object(HOST_BINDING)?.id_from_name(HOST_NAME)?.get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(body.map(|bytes| js_sys::Uint8Array::from(bytes).into()));
    // The host part is not used: a stub's fetch goes to its object.
    stub.fetch_with_request(Request::new_with_init(&format!("https://model-host{path}"), &init)?).await
}

pub fn json_error(error: &ApiError) -> Result<Response> {
    let mut response = Response::ok(error.body())?.with_status(error.status);
    response.headers_mut().set("Content-Type", "application/json")?;
    Ok(response)
}
