//! What every node answers, witnesses included: `GET /livez`, `/readyz`, `/metrics`, `/v1/node`,
//! `/v1/status`, `/v1/whoami`.

use hyper::{Response, StatusCode};
use serde_json::json;
use tandem_cluster::node::ClusterNode;
use tandem_storage::HistoryFilter;

use super::routes::Call;
use crate::http::{ApiError, Body, json_response, text_response};

/// `GET /livez`: the process answers.
pub async fn livez(_call: Call<'_>) -> Result<Response<Body>, ApiError> {
    Ok(text_response(StatusCode::OK, "text/plain", "ok\n"))
}

/// `GET /readyz`: the node is a member of a cluster.
pub async fn readyz(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    if call.state.node.status().mode == "joining" {
        Ok(text_response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "joining: not a member yet\n"))
    } else {
        Ok(text_response(StatusCode::OK, "text/plain", "ready\n"))
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.state.metrics.refresh(&call.state.node);
    Ok(text_response(StatusCode::OK, "text/plain; version=0.0.4", call.state.metrics.render()))
}

/// `GET /v1/node`: who this node is.
pub async fn node(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let node = &call.state.node;
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": node.id, "name": node.info.name, "role": node.role(), "peer_addr": node.info.peer_addr,
                "api_addr": node.info.api_addr, "boot_addr": node.info.boot_addr,
                "initialized": !node.is_pristine().await}),
    ))
}

/// `GET /v1/whoami`: the token's name and role, as this node sees them (the console shows write buttons
/// only to roles that may write; the routes check again). `open`: the node has no tokens.
pub async fn whoami(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let caller = &call.caller;
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": caller.name, "role": caller.role.as_str(), "actor": caller.actor,
                "open": call.state.tokens.is_open()}),
    ))
}

/// `GET /v1/status`: node, Raft, cluster, terminals, backups, recent changes.
pub async fn status(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let state = call.state;
    let node = &state.node;
    let mut status = serde_json::to_value(node.status()).unwrap_or_default();
    let (green, red) = state.boot.heartbeats.online_by_state(crate::node::boot::ONLINE_WINDOW);
    // `cluster_id` comes from the node's identity (null while a `--join` node waits to be added): the store
    // of such a node still holds the random id it was created with.
    let known = node.read_store().map(|s| s.projection().collection("terminals").count()).unwrap_or_default();
    status["recent_changes"] = recent_changes(node, 5);
    status["terminals"] = json!({"online": green + red, "green": green, "red": red,
                                 "offline": known.saturating_sub(green + red)});
    status["backup"] = state.backup.status_json();
    if let Ok(store) = node.read_store() {
        let (unreferenced, unreferenced_bytes) = store.unreferenced_blob_count();
        let (count, bytes) = store.blobs().fold((0, 0), |(n, b), (_, size)| (n + 1, b + size));
        status["blobs"] = json!({"count": count, "bytes": bytes, "unreferenced": unreferenced,
                                 "unreferenced_bytes": unreferenced_bytes});
        // Where the history starts (`tandem history forget`): revision 1 until something was forgotten.
        status["history"] = json!({"first_revision": store.base().next(), "base": store.base(),
                                   "base_hash": store.base_hash().to_string()});
    }
    Ok(json_response(StatusCode::OK, &status))
}

/// The newest `count` events, briefly (revision, time, actor, reason, documents), for the status page.
fn recent_changes(node: &ClusterNode, count: usize) -> serde_json::Value {
    let filter = HistoryFilter { limit: Some(count), newest_first: true, ..HistoryFilter::default() };
    let events = match node.read_store() {
        Ok(store) => store.history(&filter).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let brief: Vec<serde_json::Value> = events
        .iter()
        .map(|event| {
            let documents: Vec<String> =
                event.changes.iter().map(|c| format!("{}/{}", c.key.collection, c.key.id)).collect();
            json!({"revision": event.revision, "timestamp_ms": event.meta.timestamp_ms, "actor": event.meta.actor,
                   "reason": event.meta.reason, "documents": documents})
        })
        .collect();
    json!(brief)
}
