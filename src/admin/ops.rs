//! The operations routes: `GET /metrics`, `GET /health`, `GET /ready`, `GET /` (the status page)
//! and `POST /reload`, answered by [`crate::ops::Ops`].

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::header::{self, HeaderValue};

use super::Admin;
use crate::ops::Answer;

/// The operations routes.
pub fn routes() -> Router<Admin> {
    Router::new()
        .route("/", get(|State(a): State<Admin>| async move { respond(a.ops().page()) }))
        .route("/metrics", get(|State(a): State<Admin>| async move { respond(a.ops().metrics()) }))
        .route("/health", get(|State(a): State<Admin>| async move { respond(a.ops().health()) }))
        .route("/ready", get(|State(a): State<Admin>| async move { respond(a.ops().ready().await) }))
        .route("/reload", post(|State(a): State<Admin>| async move { respond(a.ops().reload("POST /reload")) }))
}

/// An [`Answer`] as a response, never stored by a cache in between.
fn respond(a: Answer) -> Response {
    let mut r = (a.status, a.body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
