//! The edge: the MNIST model served by a Cloudflare Worker.
//!
//! The worker routes requests, reads and checks prediction requests (bounded), and classifies
//! them itself: each isolate reads `mnist/model.bin` from the R2 bucket bound as `MODELS` on
//! its first request and keeps the lean model from `infer` in memory (`model.rs`), so
//! classification scales out with the isolates Cloudflare starts. One Durable Object
//! (`ModelHost`, in `host.rs`) owns which model is current: a generation number that
//! `POST /admin/reload` (with the `ADMIN_TOKEN` secret) moves on, and that isolates check
//! every few seconds. The weights are not compiled in, so uploading a new `model.bin` and
//! reloading ships a model without a new build.
//! The page itself is served from `artifacts/web/` by the Workers asset handler.
//!
//! Routes: `GET /health`, `POST /predict` (see [`api`]), `POST /admin/reload`; a known route
//! with another method is 405, anything else 404, and every error is JSON.

pub mod api;
#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod model;
#[cfg(target_arch = "wasm32")]
mod worker_entry;
