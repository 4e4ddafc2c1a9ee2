//! `GET /v1/backup`: stream a backup of the store.

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::ApiState;
use super::auth::Caller;
use crate::http::{ApiError, Body};

pub async fn backup(
    _state: &ApiState,
    _caller: &Caller,
    _request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Err(ApiError::new(hyper::StatusCode::NOT_IMPLEMENTED, "not_implemented", "backup is not implemented yet"))
}
