//! The worker's fetch handler: routing, the admin check, reading and checking a prediction
//! request, and classifying it with this isolate's model (`model.rs`).
//!
//! Everything a request costs is spent here, in the isolates the runtime runs as many of as
//! there is load: no request waits in line behind another at the Durable Object.

use futures_util::StreamExt;
use worker::{Context, Env, Method, Request, Response, Result, event};

use crate::api::{ApiError, BoundedBody, PredictResponse, authorised, parse_predict};
use crate::model;

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
            match model::reload(&env).await {
                Ok(loaded) => Response::from_json(&serde_json::json!({ "reloaded": true, "model": loaded.info })),
                Err(error) => json_error(&error),
            }
        }
        _ => {
            let input = match read_body(&mut request).await.and_then(|body| parse_predict(&body)) {
                Ok(input) => input,
                Err(error) => return json_error(&error),
            };
            let loaded = match model::current(&env).await {
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

pub fn json_error(error: &ApiError) -> Result<Response> {
    let mut response = Response::ok(error.body())?.with_status(error.status);
    response.headers_mut().set("Content-Type", "application/json")?;
    Ok(response)
}
