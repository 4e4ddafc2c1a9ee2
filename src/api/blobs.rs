//! `GET /v1/blobs/{sha256}/data`: a blob's bytes, streamed.

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::ApiState;
use crate::http::{ApiError, Body};

pub async fn blob_data(
    _state: &ApiState,
    _digest: &str,
    _request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Err(ApiError::new(
        hyper::StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "blob data is not implemented yet",
    ))
}
