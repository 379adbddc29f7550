//! `orthrus-server`: one model per process behind an HTTP endpoint that
//! speaks OpenAI's API and llama-server's native one.
//!
//! - [`worker`]: the thread that owns the model and runs one generation at a
//!   time, fed by a bounded queue.
//! - [`api`]: request bodies, their checks, and the response bodies.
//! - [`http`]: routing, API key, body limits, errors and streaming on hyper.
//! - [`metrics`]: counters for `GET /metrics`.
//! - [`guard`]: per-client bounds (timeouts, connection cap, body memory,
//!   CPU work off the async threads) and the API key, content type and CORS.

#![forbid(unsafe_code)]

pub mod api;
pub mod error;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod worker;
