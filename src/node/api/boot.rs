//! `GET /v1/boot`: what this node's boot servers did since it started, and the firmware they serve — the
//! console's Boot server page.
//!
//! The counters are the ones `/metrics` exports (`tandem_boot_*`, `tandem_tftp_*`), as JSON: HTTP requests by
//! kind and outcome, bytes served, connections and downloads open now, heartbeats accepted; TFTP transfers
//! by outcome, active transfers, bytes, retransmits. They are node-local and start at zero with the process.
//! The firmware list is read from the replicated `firmware` collection, with the size of each image's blob
//! as this node stores it (`null`: the blob is not here, so this node cannot serve the image).

use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tandem_storage::Digest;

use super::routes::Call;
use crate::http::{ApiError, Body, json_response};

/// `GET /v1/boot`.
pub async fn stats(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let state = call.state;
    let http = &state.boot.http;
    let requests: Vec<Value> = http
        .request_counts()
        .into_iter()
        .map(|(kind, outcome, count)| json!({"kind": kind.as_str(), "outcome": outcome.as_str(), "count": count}))
        .collect();
    let tftp = state.boot.tftp.snapshot();
    let store = state.node.read_store()?;
    let firmware: Vec<Value> = store
        .projection()
        .collection("firmware")
        .map(|(key, document)| {
            let body = document.value();
            let digest = body["blob"].as_str().unwrap_or_default().to_string();
            let stored = Digest::parse(&digest).ok().and_then(|d| store.blob_size(&d));
            json!({"name": key.id, "version": body.get("version").cloned().unwrap_or(Value::Null),
                   "blob": digest, "size": body.get("size").cloned().unwrap_or(Value::Null),
                   "stored_bytes": stored, "kernel": body.get("kernel").is_some(),
                   "mod_revision": document.mod_revision})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "revision": store.revision(),
            "http": {"requests": requests, "bytes_served": http.bytes_served(),
                     "connections_open": http.connections_open(), "downloads_active": http.downloads_active(),
                     "heartbeats": http.heartbeats()},
            "tftp": {"active": tftp.active, "completed": tftp.completed, "failed": tftp.failed,
                     "aborted": tftp.aborted, "refused": tftp.refused, "bytes": tftp.bytes,
                     "retransmits": tftp.retransmits},
            "firmware": firmware,
        }),
    ))
}
