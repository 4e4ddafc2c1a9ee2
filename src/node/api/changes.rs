//! `POST /v1/changes`: a change set of any number of operations, applied atomically.

use hyper::Response;
use serde::Deserialize;
use tandem_storage::limits::MAX_CHANGE_SET_BYTES;
use tandem_storage::{ChangeSet, Operation, Precondition};

use super::routes::Call;
use super::write;
use crate::http::{ApiError, Body, parse_json, read_body};

/// A change set as the API accepts it (actor, token, source and timestamp are set by the node).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeSetInput {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    preconditions: Vec<Precondition>,
    operations: Vec<Operation>,
}

/// `POST /v1/changes`.
pub async fn post(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let body = read_body(
        call.request.into_body(),
        MAX_CHANGE_SET_BYTES + 4096,
        call.state.limits.http.body_read_timeout,
    )
    .await?;
    let input: ChangeSetInput = parse_json(&body)?;
    let change = ChangeSet {
        meta: call.caller.change_meta(input.reason, input.request_id.filter(|id| !id.is_empty())),
        preconditions: input.preconditions,
        operations: input.operations,
    };
    write(call.state, change).await
}
