//! Cluster membership: `GET /v1/cluster/servers`, `POST /v1/cluster/servers`,
//! `DELETE /v1/cluster/servers/{name}`, `PUT /v1/cluster/servers/{name}/role` (data ↔ mirror on a running
//! cluster, with `dry_run` for the preview), and the planned leadership hand-over `POST /v1/cluster/leader`.
//! Membership changes and hand-overs made on a follower are proxied to the leader's API (with the caller's own
//! token: every node of a cluster is given the same tokens).

use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tandem_cluster::node::{HandoverError, MembershipError};
use tandem_cluster::{NodeId, NodeInfo, Role};

use super::ApiState;
use super::routes::Call;
use crate::http::{ApiError, Body, json_response, parse_json, read_body};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddServerInput {
    id: NodeId,
    name: String,
    #[serde(default)]
    role: Role,
    peer_addr: String,
    api_addr: String,
    #[serde(default)]
    boot_addr: String,
}

/// `GET /v1/cluster/servers`.
pub async fn list(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let members: Vec<_> = call
        .state
        .node
        .members()
        .into_iter()
        .map(|(id, info, voter)| {
            json!({"id": id, "name": info.name, "role": info.role, "voter": voter,
                   "peer_addr": info.peer_addr, "api_addr": info.api_addr, "boot_addr": info.boot_addr})
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"servers": members})))
}

/// `POST /v1/cluster/servers`: add a member (on the leader).
pub async fn add(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let node = &call.state.node;
    let headers = call.request.headers().clone();
    let body =
        read_body(call.request.into_body(), 64 * 1024, call.state.limits.http.body_read_timeout).await?;
    let input: AddServerInput = parse_json(&body)?;
    if let Some(response) =
        proxy_to_leader(call.state, &headers, Method::POST, "/v1/cluster/servers", Some(body.to_vec()))
            .await?
    {
        return Ok(response);
    }
    let info = NodeInfo {
        name: input.name.clone(),
        role: input.role,
        peer_addr: input.peer_addr,
        api_addr: input.api_addr,
        boot_addr: input.boot_addr,
    };
    node.add_server(input.id, info).await.map_err(membership_error)?;
    Ok(json_response(StatusCode::OK, &json!({"added": input.name, "id": input.id})))
}

/// `DELETE /v1/cluster/servers/{name}`: remove a member (on the leader).
pub async fn remove(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let node = &call.state.node;
    let name = call.param(0);
    let path = call.request.uri().path().to_string();
    if let Some(response) =
        proxy_to_leader(call.state, call.request.headers(), Method::DELETE, &path, None).await?
    {
        return Ok(response);
    }
    let id = node.remove_server(&name).await.map_err(membership_error)?;
    Ok(json_response(StatusCode::OK, &json!({"removed": name, "id": id})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeadInput {
    name: String,
}

/// `POST /v1/cluster/leader {"name": NAME}`: hand leadership over to the data node NAME (on the leader;
/// `tandem_cluster::node::handover`).
pub async fn lead(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let node = &call.state.node;
    let headers = call.request.headers().clone();
    let body =
        read_body(call.request.into_body(), 4 * 1024, call.state.limits.http.body_read_timeout).await?;
    let input: LeadInput = parse_json(&body)?;
    if let Some(response) =
        proxy_to_leader(call.state, &headers, Method::POST, "/v1/cluster/leader", Some(body.to_vec())).await?
    {
        return Ok(response);
    }
    let handover = node.hand_over(&input.name).await.map_err(handover_error)?;
    Ok(json_response(StatusCode::OK, &json!(handover)))
}

fn handover_error(error: HandoverError) -> ApiError {
    let message = error.to_string();
    match error {
        HandoverError::UnknownServer(_) => ApiError::new(StatusCode::NOT_FOUND, "unknown_server", message)
            .with_hint("tandem servers list shows the members"),
        HandoverError::NotEligible { .. } => ApiError::new(StatusCode::CONFLICT, "not_eligible", message)
            .with_hint("only a voting data node can lead"),
        HandoverError::NotCaughtUp { .. } => ApiError::new(StatusCode::CONFLICT, "not_caught_up", message),
        HandoverError::Busy => ApiError::new(StatusCode::CONFLICT, "busy", message),
        HandoverError::Unreachable { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unreachable", message)
        }
        HandoverError::NoQuorum(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_quorum", message),
        HandoverError::NotLeader | HandoverError::Failed { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "handover_failed", message)
                .with_hint("the cluster keeps its leader; tandem status shows who leads")
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleInput {
    role: Role,
    /// Only preview: the resulting mode and what it survives; nothing changes.
    #[serde(default)]
    dry_run: bool,
}

/// `PUT /v1/cluster/servers/{name}/role`: switch a member between data node and mirror (on the leader).
pub async fn set_role(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let node = &call.state.node;
    let name = call.param(0);
    let path = call.request.uri().path().to_string();
    let headers = call.request.headers().clone();
    let body =
        read_body(call.request.into_body(), 4 * 1024, call.state.limits.http.body_read_timeout).await?;
    let input: RoleInput = parse_json(&body)?;
    if let Some(response) =
        proxy_to_leader(call.state, &headers, Method::PUT, &path, Some(body.to_vec())).await?
    {
        return Ok(response);
    }
    let change = node.change_role(&name, input.role, !input.dry_run).await.map_err(membership_error)?;
    Ok(json_response(StatusCode::OK, &json!(change)))
}

fn membership_error(error: MembershipError) -> ApiError {
    match error {
        MembershipError::Refused(message) => ApiError::new(StatusCode::CONFLICT, "refused", message),
        MembershipError::Failed(message) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }
}

/// On a follower, sends the request to the leader's API and returns its answer; on the leader, `None`.
async fn proxy_to_leader(
    state: &ApiState,
    headers: &hyper::HeaderMap,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Option<Response<Body>>, ApiError> {
    let node = &state.node;
    match node.leader() {
        Some(leader) if leader == node.id => Ok(None),
        Some(leader) => {
            let Some((_, info, _)) = node.members().into_iter().find(|(id, _, _)| *id == leader) else {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_leader",
                    "the leader is not in the membership",
                ));
            };
            // The caller's own token goes along: every node of a cluster is given the same tokens.
            let token = headers
                .get(hyper::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::to_string);
            // Over HTTPS when this node has TLS: the token must not cross the network in clear.
            let url = format!("{}://{}", state.api_scheme(), info.api_addr);
            let mut client = crate::client::api::ApiClient::new(&url, token);
            if let Some(tls) = &state.tls {
                client = client.with_tls(tls.client_config());
            }
            let (status, value) = client
                .send(method, path, body.map(|b| serde_json::from_slice(&b).unwrap_or_default()))
                .await
                .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "leader_unreachable", e.to_string()))?;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            Ok(Some(json_response(status, &value)))
        }
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "the cluster has no leader right now",
        )
        .with_hint("retry in a few seconds; if it persists, check `tandem status`")),
    }
}
