//! `POST /v1/changes`: a change set of any number of operations, applied atomically.

use hyper::Response;
use serde::Deserialize;
use tandem_storage::limits::MAX_CHANGE_SET_BYTES;
use tandem_storage::{ChangeMeta, ChangeSet, Operation, Precondition};

use super::routes::Call;
use super::write;
use crate::http::{ApiError, Body, parse_json, read_body};

/// A change set as the API accepts it (actor, token, source and timestamp are set by the node).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangeSetInput {
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
    let change = input.into_change_set(|reason, request_id| call.caller.change_meta(reason, request_id));
    write(call.state, change).await
}

impl ChangeSetInput {
    /// The change set to propose; `meta` makes its meta from the reason and the request id (the caller's
    /// actor, token, source and the time).
    pub(super) fn into_change_set(
        self,
        meta: impl FnOnce(String, Option<String>) -> ChangeMeta,
    ) -> ChangeSet {
        ChangeSet {
            meta: meta(self.reason, self.request_id.filter(|id| !id.is_empty())),
            preconditions: self.preconditions,
            operations: self.operations,
        }
    }
}
