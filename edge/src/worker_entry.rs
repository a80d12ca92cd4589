//! The worker's fetch handler: routing, the admin check, and forwarding to the Durable Object.

use worker::{Context, Env, Method, Request, Response, Result, event};

use crate::api::{ApiError, authorised};

/// The Durable Object namespace and the one object in it that holds the model.
const HOST_BINDING: &str = "MODEL_HOST";
const HOST_NAME: &str = "mnist";

#[event(fetch)]
async fn fetch(request: Request, env: Env, _context: Context) -> Result<Response> {
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
            forward(request, &env).await
        }
        _ => forward(request, &env).await,
    }
}

/// Hands the request, as it came, to the Durable Object that holds the model.
async fn forward(request: Request, env: &Env) -> Result<Response> {
    let stub = env.durable_object(HOST_BINDING)?.id_from_name(HOST_NAME)?.get_stub()?;
    stub.fetch_with_request(request).await
}

pub fn json_error(error: &ApiError) -> Result<Response> {
    let mut response = Response::ok(error.body())?.with_status(error.status);
    response.headers_mut().set("Content-Type", "application/json")?;
    Ok(response)
}
