//! Time travel over the API: export the configuration at a revision, diff two revisions, revert, undo, import.

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::ApiState;
use super::auth::Caller;
use crate::http::{ApiError, Body};

fn not_yet(what: &str) -> ApiError {
    ApiError::new(
        hyper::StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        format!("{what} is not implemented yet"),
    )
}

pub async fn export(
    _state: &ApiState,
    _caller: &Caller,
    _request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Err(not_yet("export"))
}

pub async fn diff(
    _state: &ApiState,
    _caller: &Caller,
    _request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Err(not_yet("diff"))
}

pub async fn revert(
    _state: &ApiState,
    _caller: &Caller,
    _request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Err(not_yet("revert"))
}

pub async fn undo(
    _state: &ApiState,
    _caller: &Caller,
    _request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Err(not_yet("undo"))
}

pub async fn import(
    _state: &ApiState,
    _caller: &Caller,
    _request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Err(not_yet("import"))
}
