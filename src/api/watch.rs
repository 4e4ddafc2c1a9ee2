//! `GET /v1/watch`: a gap-free, resumable stream of events.

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::ApiState;
use super::auth::Caller;
use crate::http::{ApiError, Body};

pub async fn watch(
    _state: &ApiState,
    _caller: &Caller,
    _request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Err(ApiError::new(hyper::StatusCode::NOT_IMPLEMENTED, "not_implemented", "watch is not implemented yet"))
}
