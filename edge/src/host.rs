//! `ModelHost`, the Durable Object that owns which model is current: a generation number,
//! kept in its storage, that `POST /admin/reload` moves on. It holds no model itself: the
//! worker's isolates do (`model.rs`), and they ask it, at most every few seconds, whether the
//! model they hold is still current.
//!
//! One object for the whole deployment is enough for this: it answers a number, not a
//! classification, so its load is the number of isolates over the recheck interval, not the
//! number of requests.

use std::cell::Cell;

use serde::{Deserialize, Serialize};
use worker::{DurableObject, Env, Request, Response, Result, State, durable_object};

const GENERATION_KEY: &str = "generation";

/// What the object answers on both of its routes.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct Generation {
    pub generation: u64,
}

#[durable_object(fetch)]
pub struct ModelHost {
    state: State,
    /// The stored generation, once read.
    generation: Cell<Option<u64>>,
}

impl DurableObject for ModelHost {
    fn new(state: State, _env: Env) -> Self {
        ModelHost { state, generation: Cell::new(None) }
    }

    async fn fetch(&self, request: Request) -> Result<Response> {
        // The worker sends only these two, the reload after checking the admin token.
        let mut generation = match self.generation.get() {
            Some(generation) => generation,
            None => self.state.storage().get::<u64>(GENERATION_KEY).await?.unwrap_or(0),
        };
        if request.path() == "/admin/reload" {
            generation += 1;
            self.state.storage().put(GENERATION_KEY, generation).await?;
        }
        self.generation.set(Some(generation));
        Response::from_json(&Generation { generation })
    }
}
