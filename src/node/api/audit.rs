//! The history's hash chain over the API (see `tandem_storage::chain`).
//!
//! - `GET /v1/history/verify` recomputes this node's chain from every event it holds, streaming, off the
//!   async workers and without holding the store (a [`ChainView`] is detached), and says whether each event
//!   still hashes to the hash stored beside it; the first one that does not is named. After `tandem history
//!   forget` it starts from the base hash, and says where (`base`, `base_hash`).
//! - `GET /v1/history/chain?from=A&to=B` lists the stored hashes of a range, at most [`MAX_HASHES`]: what
//!   `tandem history verify` compares between members, bisecting for the first revision that differs.
//!
//! Both answer from the node's own applied state (no consensus): the point is to compare members.

use hyper::{Response, StatusCode};
use serde_json::json;
use tandem_storage::Revision;
use tandem_storage::chain::ChainView;

use super::routes::Call;
use super::{internal, query_number};
use crate::http::{ApiError, Body, json_response};

/// The most hashes one `GET /v1/history/chain` answers.
pub const MAX_HASHES: u64 = 10_000;

fn chain_view(call: &Call<'_>) -> Result<ChainView, ApiError> {
    Ok(call.state.node.read_store()?.chain())
}

/// `GET /v1/history/verify`.
pub async fn verify(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let mut view = chain_view(&call)?;
    let mut attempts = 0;
    let check = loop {
        let verified = view.clone();
        let check = tokio::task::spawn_blocking(move || verified.verify())
            .await
            .map_err(|e| internal(&format!("the chain check stopped: {e}")))?;
        match check {
            // A forget applied meanwhile deleted events the view expected: verify the new history.
            Err(tandem_storage::Error::Stale(_)) if attempts < 3 => {
                attempts += 1;
                view = chain_view(&call)?;
            }
            other => break other.map_err(|e| internal(&e.to_string()))?,
        }
    };
    let first_mismatch = check
        .first_mismatch
        .as_ref()
        .map(|(revision, message)| json!({"revision": revision, "message": message}));
    Ok(json_response(
        StatusCode::OK,
        &json!({"node": call.state.node.info.name, "revision": check.revision, "head": check.head.to_string(),
                "stored_head": check.stored_head.to_string(), "intact": check.is_intact(),
                "first_mismatch": first_mismatch, "base": view.base(), "base_hash": view.base_hash().to_string()}),
    ))
}

/// `GET /v1/history/chain?from=A&to=B`.
pub async fn hashes(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let view = chain_view(&call)?;
    let from = query_number(&call.query, "from")?.unwrap_or(1).max(1);
    let to = query_number(&call.query, "to")?.unwrap_or(view.revision().0);
    let to = to.min(from.saturating_add(MAX_HASHES - 1));
    let hashes = tokio::task::spawn_blocking(move || {
        view.hashes(Revision(from), Revision(to), MAX_HASHES as usize).map(|hashes| (view.revision(), hashes))
    })
    .await
    .map_err(|e| internal(&format!("reading the chain stopped: {e}")))?
    .map_err(|e| internal(&e.to_string()))?;
    let (revision, hashes) = hashes;
    let hashes: Vec<_> = hashes
        .iter()
        .map(|(revision, hash)| json!({"revision": revision, "hash": hash.to_string()}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"revision": revision, "hashes": hashes})))
}
