//! `GET /` and `GET /console/{name}`: the operator console's static files ([`crate::node::console`], which
//! holds them and their headers), public because they hold no data; the page's script then calls the rest of
//! this API with the operator's token.

use hyper::Response;
use tandem_cluster::Role;

use super::routes::Call;
use crate::http::{ApiError, Body};
use crate::node::console;

/// `GET /`: the console, or on a witness a line saying what it is.
pub async fn page(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let node = &call.state.node;
    let witness = (node.role() == Role::Witness).then_some(node.info.name.as_str());
    Ok(console::page(witness))
}

/// `GET /console/{name}`: `console.css` or `console.js`.
pub async fn asset(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    console::asset(&call.param(0))
}
