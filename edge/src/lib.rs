//! The edge: the MNIST model served by a Cloudflare Worker.
//!
//! The worker routes requests and reads and checks prediction requests (bounded); one
//! Durable Object (`ModelHost`, in `host.rs`) owns the model:
//! it reads `mnist/model.bin` from the R2 bucket bound as `MODELS` on its first request, keeps
//! the lean model from `infer` in memory, and answers every classification after that. The
//! weights are not compiled in, so uploading a new `model.bin` and calling
//! `POST /admin/reload` (with the `ADMIN_TOKEN` secret) ships a model without a new build.
//! The page itself is served from `artifacts/web/` by the Workers asset handler.
//!
//! Routes: `GET /health`, `POST /predict` (see [`api`]), `POST /admin/reload`; a known route
//! with another method is 405, anything else 404, and every error is JSON.

pub mod api;
#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod worker_entry;
