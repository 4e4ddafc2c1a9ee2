//! `GET /v1/terminals`: every configured terminal with what this node hears from it — the console's
//! Terminals page, in one request.
//!
//! Two sources meet here: the `terminals` collection (replicated: the same on every node) and this node's
//! heartbeat registry ([`crate::node::boot::heartbeat`]: node-local, lost on restart). A terminal is
//! - `green` or `red`: heard from within [`ONLINE_WINDOW`], reporting that state;
//! - `offline`: configured, but not heard from within the window (or never, since this node started).
//!
//! Heartbeats from MACs no terminal has (a terminal deleted since) are not listed: the boot server already
//! refuses heartbeats of unknown MACs, so only a deletion leaves one behind. The answer is read-only and
//! costs one pass over the collection; `limit` is not needed at the sizes a boot server serves (the
//! registry holds at most 65,536 terminals).

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tandem_storage::Mac;

use super::routes::Call;
use crate::http::{ApiError, Body, json_response};
use crate::node::boot::ONLINE_WINDOW;

/// `GET /v1/terminals`.
pub async fn list(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let state = call.state;
    let store = state.node.read_store()?;
    let now = std::time::Instant::now();
    let (mut green, mut red, mut offline) = (0u64, 0u64, 0u64);
    let mut terminals = Vec::new();
    for (key, document) in store.projection().collection("terminals") {
        let body = document.value();
        let mac = body["mac"].as_str().and_then(|text| Mac::parse(text).ok());
        let heard = mac.and_then(|mac| state.boot.heartbeats.get(mac));
        let online = heard.as_ref().filter(|h| now.saturating_duration_since(h.last_seen) <= ONLINE_WINDOW);
        let status = match online {
            Some(heartbeat) => heartbeat.state.as_str(),
            None => "offline",
        };
        match status {
            "green" => green += 1,
            "red" => red += 1,
            _ => offline += 1,
        }
        terminals.push(json!({
            "id": key.id,
            "mac": mac.map(|mac| mac.to_string()),
            "model": body.get("model").cloned().unwrap_or(Value::Null),
            "firmware": body.get("firmware").cloned().unwrap_or(Value::Null),
            "location": body["settings"].get("location").cloned().unwrap_or(Value::Null),
            "mod_revision": document.mod_revision,
            "status": status,
            "detail": heard.as_ref().map(|h| h.detail.clone()),
            "last_seen_ms": heard.as_ref().map(|h| unix_ms(h.last_seen_wall)),
            "heartbeats": heard.as_ref().map_or(0, |h| h.count),
        }));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"revision": store.revision(), "online_window_seconds": ONLINE_WINDOW.as_secs(),
                "counts": {"total": terminals.len(), "green": green, "red": red, "offline": offline},
                "terminals": terminals}),
    ))
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
