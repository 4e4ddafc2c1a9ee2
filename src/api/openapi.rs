//! `GET /v1/openapi.json`: the OpenAPI 3 document describing every route of [`super::routes::ROUTES`].

use hyper::Response;

use crate::http::{ApiError, Body};

pub fn document() -> Result<Response<Body>, ApiError> {
    Err(ApiError::new(
        hyper::StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "openapi is not implemented yet",
    ))
}
