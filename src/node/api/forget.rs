//! `POST /v1/history/forget`: forget the history before a revision (`tandem history forget`, admin only).
//!
//! The body is `{"before": R, "reason": "…", "dry_run": false}`. The handler, like revert and undo
//! ([`super::history`]):
//! 1. previews under the store's read lock ([`Store::forget_preview`](tandem_storage::Store)): how many
//!    events would go, where the history starts now, and which blobs nothing would reference any more;
//! 2. answers the preview for a dry run, and `unchanged` when the history already starts at `R` or later
//!    (forgetting twice is harmless: nothing is written, no record);
//! 3. otherwise proposes [`Command::ForgetHistory`] with the caller's actor, token, source and reason, which
//!    every member applies alike (`tandem_storage::forget`), and answers once this node has applied it.
//!
//! Answers: `{dry_run, outcome, before, first_kept, events, revision, removable_blobs}` where `outcome` is
//! `preview`, `forgotten` (then `revision` is the forget's own event) or `unchanged`. `R` past the next
//! revision is 404 `no_such_revision` (the future cannot be forgotten), `R = 0` a 400.
//!
//! Reading a forgotten revision afterwards (`GET /v1/export?at=`, `/v1/diff`, `/v1/docs/…?at=`, revert,
//! undo, watch) answers 410 `forgotten`, naming where the history starts (`storage_error` in the API module).

use std::time::Duration;

use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tandem_storage::{Command, ForgetPreview, Outcome, Rejection, Revision};

use super::routes::Call;
use super::{internal, rejection_error, require_reason};
use crate::http::{ApiError, Body, json_response, parse_json, read_body};

/// Largest body of a forget request.
const MAX_REQUEST_BODY: usize = 64 * 1024;

/// `POST /v1/history/forget`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForgetInput {
    /// The first revision to keep: every event before it is forgotten.
    before: u64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    dry_run: bool,
}

pub async fn forget(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let Call { state, caller, request, .. } = call;
    let body = read_body(request.into_body(), MAX_REQUEST_BODY, state.limits.http.body_read_timeout).await?;
    let input: ForgetInput = parse_json(&body)?;
    if input.before == 0 {
        return Err(ApiError::bad_request(
            "revisions start at 1: \"before\" names the first revision to keep",
        )
        .with_hint("`tandem history` lists the revisions"));
    }
    require_reason(state, &input.reason)?;
    let before = Revision(input.before);
    let node = &state.node;
    // Reads the history after the new base (the blobs it references): off the async workers.
    let preview = tokio::task::block_in_place(|| {
        let store = node.read_store()?;
        store
            .forget_preview(before)
            .map(|preview| (preview, store.revision()))
            .map_err(|e| internal(&e.to_string()))
    })?;
    let (preview, current) = match preview {
        (Ok(preview), current) => (preview, current),
        (Err(rejection), current) => return refused(&rejection, current),
    };
    if input.dry_run {
        return Ok(answer(true, "preview", &preview, current));
    }
    let meta = caller.change_meta(input.reason, None);
    let response = super::propose(state, Command::ForgetHistory { before, meta }).await?;
    match response.outcome {
        Outcome::HistoryForgotten { events, revision, .. } => {
            // Read your writes: on a follower, answer once this node has forgotten too.
            node.wait_applied(revision, Duration::from_secs(3)).await;
            let done = ForgetPreview { events, first_kept_now: before, ..preview };
            Ok(answer(false, "forgotten", &done, revision))
        }
        // The history moved on between the preview and the apply (another forget).
        Outcome::Rejected(rejection) => refused(&rejection, node.revision()),
        other => Err(internal(&format!("unexpected outcome {other:?}"))),
    }
}

/// A forget the store refuses: `unchanged` when there is nothing to forget, 404 for the future.
fn refused(rejection: &Rejection, current: Revision) -> Result<Response<Body>, ApiError> {
    match rejection {
        Rejection::NothingToForget { before, first_kept } => Ok(json_response(
            StatusCode::OK,
            &json!({"dry_run": false, "outcome": "unchanged", "before": before, "first_kept": first_kept,
                    "events": 0, "revision": current, "removable_blobs": [], "message": rejection.to_string()}),
        )),
        Rejection::ForgetFuture { .. } => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "no_such_revision", rejection.to_string()).with_hint(
                "`tandem history` lists the revisions; --before may be at most the current revision + 1",
            ))
        }
        other => Err(rejection_error(other)),
    }
}

fn answer(dry_run: bool, outcome: &str, preview: &ForgetPreview, revision: Revision) -> Response<Body> {
    let blobs: Vec<serde_json::Value> = preview
        .removable_blobs
        .iter()
        .map(|(digest, size)| json!({"digest": digest.to_string(), "size": size}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"dry_run": dry_run, "outcome": outcome, "before": preview.before,
                "first_kept": preview.first_kept_now, "events": preview.events, "revision": revision,
                "removable_blobs": blobs}),
    )
}
