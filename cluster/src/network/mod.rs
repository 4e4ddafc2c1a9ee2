//! # The peer network: Raft RPCs over HTTP/1.1
//!
//! Every node runs one peer endpoint ([`serve_peer`]) and talks to the others through one
//! [`PeerNetwork`], the [`openraft::network::RaftNetworkFactory`] handed to [`crate::Raft`].
//!
//! ## Routes and wire format
//!
//! Every route is a `POST` whose body is one value encoded with bincode 2 in its standard configuration
//! ([`crate::types::encode`] / [`crate::types::decode`], the same encoding as everywhere in Tandem):
//!
//! | route              | request body                          | `200 OK` body                                                  |
//! |--------------------|---------------------------------------|----------------------------------------------------------------|
//! | `/raft/append`     | `AppendEntriesRequest<TypeConfig>`    | `Result<AppendEntriesResponse, RaftError>`                     |
//! | `/raft/vote`       | `VoteRequest<NodeId>`                 | `Result<VoteResponse, RaftError>`                              |
//! | `/raft/snapshot`   | `InstallSnapshotRequest<TypeConfig>`  | `Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>` |
//! | `/cluster/write`   | `tandem_storage::Command`             | `Result<Written, RaftError<ClientWriteError>>`                 |
//! | `/cluster/campaign` | `CampaignRequest` (leader hand-over, [`campaign`]) | `Result<(), String>`                           |
//! | `/cluster/read-index` | `()` (nothing)                     | `Result<(read log id, applied log id), RaftError<CheckIsLeaderError>>` |
//!
//! A `200 OK` means the request reached Raft: its body is whatever the local `Raft` call returned, error
//! included. The client turns such an error into [`openraft::error::RemoteError`] — for example a follower that
//! is shutting down, or a `ForwardToLeader` from a node that is not the leader.
//!
//! Any other status means the request never reached Raft and nothing changed; the body is a short
//! `text/plain` explanation:
//!
//! | status | when                                                                              |
//! |--------|-----------------------------------------------------------------------------------|
//! | 401    | the [`SECRET_HEADER`] is missing or wrong (checked first, before anything is read) |
//! | 400    | the [`PROTOCOL_HEADER`] is missing or names another version than [`PROTOCOL_VERSION`], or an identity header is unreadable |
//! | 403    | an identity check failed: another cluster, another (or no) target node, a sender that is not a member; the [`REFUSAL_HEADER`] names which ([`identity_check`]) |
//! | 404    | unknown path                                                                      |
//! | 405    | known path, method other than `POST`                                              |
//! | 413    | body over [`MAX_BODY_BYTES`] (announced by `Content-Length`, or found while reading) |
//! | 408    | the body did not arrive within [`BODY_READ_TIMEOUT`]                              |
//! | 400    | the body could not be read, or does not decode as the route's type                |
//! | 500    | the result could not be encoded (a bug, never expected)                           |
//!
//! Snapshots use openraft 0.9's default chunked transfer (`install_snapshot` with an offset and a `done`
//! flag), so one request carries at most `Config::snapshot_max_chunk_size` bytes of snapshot (the node sets it
//! to about 1 MiB, well under [`MAX_BODY_BYTES`]).
//!
//! ## Authentication: mutual TLS, then the cluster secret
//!
//! With TLS configured ([`crate::tls`], `[tls]` in the node's config file; required by `tandem serve` on any
//! non-loopback peer address), every connection starts with a mutual TLS handshake: each side presents its
//! node certificate and verifies the other's against the cluster CA. A client without such a certificate is
//! refused during the handshake, before any request is read ([`PeerServerOptions::tls`]); the client verifies
//! the server's certificate against the peer address it dials (DNS name or IP address). Without TLS (loopback
//! only), requests travel in clear.
//!
//! Every request then carries the cluster secret in the [`SECRET_HEADER`] header: a second factor (a stolen
//! node certificate alone does not let anyone speak Raft) and the cluster's own name, for a CA that signs the
//! certificates of several clusters. The server compares it in constant time (the time taken does not depend
//! on where the first differing byte is) and answers 401 before reading the body, so an unauthenticated client
//! can neither change the node's state nor make it buffer a large body. An empty secret is refused on both
//! sides: a node configured without a secret accepts nothing.
//!
//! ## Identity
//!
//! Every request also carries the cluster id ([`CLUSTER_ID_HEADER`]), the sender's node id
//! ([`NODE_ID_HEADER`]) and the intended receiver's ([`TARGET_ID_HEADER`]); the receiver refuses a request of
//! another cluster or for another node, so a node whose data directory was replaced is never counted as the
//! member it replaced. [`identity_check`] explains the checks, the refusals and how a joining node learns its
//! cluster id.
//!
//! ## Timeouts
//!
//! - Each RPC is bounded as a whole (connect, send, response, body) by the `RPCOption::hard_ttl()` openraft
//!   passes: `heartbeat_interval` for `append`, `election_timeout_min` for `vote`, `install_snapshot_timeout`
//!   for snapshot chunks. Keep those generous for HTTP plus an fsync on the far side (see
//!   `shared/notes/openraft-sled.md`: heartbeat 200-300 ms, election 1-2 s, snapshot 5-10 s). openraft also
//!   wraps each call in its own timeout of the same length, so a slow `append` or `vote` may surface as
//!   openraft's `RPCError::Timeout` rather than ours. A forwarded write takes an explicit timeout
//!   ([`PeerNetwork::forward_write`]).
//! - A Raft RPC that outlives its ttl is not torn down: it finishes in the background (at most 3 s more) and
//!   its answer is discarded, so its connection goes back to the pool. On HTTP/1.1 abandoning a request
//!   means closing its connection, and on a slow, lossy link the next connection's TCP and TLS handshakes
//!   outlast the next ttl, which closed that one too: with 50 ms ± 20 ms and 5 % loss no heartbeat got
//!   through (docs/cluster.md, "Timing on slow links"). Forwarded writes, read-index and campaign requests
//!   are still abandoned at their timeout: their caller has answered its client.
//! - Failures are classified so that openraft reacts well (it backs off only on `Unreachable`, for
//!   [`openraft::network::RaftNetwork::backoff`], 500 ms by default — below any sane election timeout):
//!
//!   | what happened                                                  | `RPCError`                          |
//!   |----------------------------------------------------------------|-------------------------------------|
//!   | connect failed (refused, no route), or no answer within the ttl | `Unreachable`                       |
//!   | the peer refused the request (401, 404, 400, 413, ...)         | `Unreachable` (no use retrying now) |
//!   | the peer refused who sent it or whom it was for (403)          | `Unreachable`, and recorded as a typed [`Refusal`] for status |
//!   | an `append` of several entries over [`MAX_BODY_BYTES`]          | `PayloadTooLarge` (half as many)    |
//!   | any other request over [`MAX_BODY_BYTES`] (checked before sending) | `Unreachable`                    |
//!   | connection broken mid-exchange, undecodable answer             | `NetworkError`                      |
//!   | Raft on the peer returned an error                             | `RemoteError`                       |
//!
//! - Server side: a connection must deliver a request head within [`IDLE_TIMEOUT`] (this also closes idle
//!   keep-alive connections), and its body within [`BODY_READ_TIMEOUT`]. The client pool drops idle
//!   connections after [`POOL_IDLE_TIMEOUT`], before the server would, so the client rarely picks a connection
//!   the server is closing (and hyper retries a request that could not be sent on such a connection).
//!
//! ## Why HTTP/1.1 with keep-alive
//!
//! Raft sends a steady stream of small requests (heartbeats every few hundred milliseconds, appends on every
//! write). Opening a TCP connection per request would add a round trip per RPC and churn ephemeral ports, so
//! the client keeps connections alive in one shared pool ([`hyper_util::client::legacy::Client`]) and the
//! server keeps them open; `TCP_NODELAY` is set on both ends so small bodies are not held back by Nagle's
//! algorithm. HTTP/1.1 rather than HTTP/2: one request per connection at a time means a multi-megabyte
//! snapshot chunk never sits in front of a heartbeat (the pool simply opens a second connection), the
//! protocol needs no extra crate features, and the endpoint stays easy to poke at with `curl`.
//!
//! AppendEntries, the one RPC on a write's critical path, does not use the pool: each replication stream
//! keeps a connection of its own and drives its I/O on its own task, which spares two thread wake-ups per
//! exchange (`stream_connection.rs`).
//!
//! ## Adding a route
//!
//! In `network/server.rs`: one `Route` variant with its path, and one match arm calling the Raft method; the
//! request and the result are decoded, encoded and error-mapped by the shared `rpc` helper. Add the path as a
//! constant here and a client method in `network/client.rs` built on `PeerNetwork::call`.

pub mod campaign;
mod client;
mod election_hold;
pub mod identity_check;
pub mod redundant_heartbeat;
mod server;
mod stream_connection;

use std::time::Duration;

pub use client::{Contact, ForwardError, InvalidSecret, PeerClient, PeerNetwork, error_chain};
pub use identity_check::{LocalIdentity, Refusal, RefusalKind, RefusedSender};
pub use server::{
    DEFAULT_MAX_PEER_CONNECTIONS, DEFAULT_MAX_PEER_CONNECTIONS_PER_SOURCE, PeerServerOptions, serve_peer,
    serve_peer_with,
};

/// The header in which a node names itself (its id, decimal), so a cluster can refuse non-members.
pub const NODE_ID_HEADER: &str = "x-tandem-node-id";
/// The header that names the node a request is meant for (its id, decimal), so that a different node now
/// answering at that address (its data directory was emptied, or it founded a cluster of its own) refuses it.
pub const TARGET_ID_HEADER: &str = "x-tandem-target-node-id";
/// The header that carries the sender's cluster id, once it has one (see [`identity_check`]).
pub const CLUSTER_ID_HEADER: &str = "x-tandem-cluster-id";
/// The header of a 403 answer that names the [`RefusalKind`] (`other-cluster`, `other-node`, `not-a-member`).
pub const REFUSAL_HEADER: &str = "x-tandem-refusal";
/// The header that carries the cluster secret on every peer request.
pub const SECRET_HEADER: &str = "x-tandem-cluster-secret";
/// The header that carries the peer protocol version on every request.
pub const PROTOCOL_HEADER: &str = "x-tandem-protocol";
/// The peer protocol this build speaks: the routes, headers and bincode bodies described here. Version 1
/// (before the header existed) sent none; version 2 sent no cluster id and a forwarded write named no target;
/// version 3 carried change sets without the audit fields (token, source); version 4 had no
/// `ForgetHistory` command and sent snapshots of format 2 (no base), which a version-4 node could not
/// read from a version-5 leader.
/// A request of another version is refused (400) with both versions named: every node of a cluster must run a
/// build that speaks the same protocol.
pub const PROTOCOL_VERSION: u32 = 5;

/// The largest request (and response) body accepted: larger than any snapshot chunk the node sends.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Path of the AppendEntries RPC (heartbeats too).
pub const APPEND_PATH: &str = "/raft/append";
/// Path of the RequestVote RPC.
pub const VOTE_PATH: &str = "/raft/vote";
/// Path of one InstallSnapshot chunk.
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
/// Path of a client write forwarded by a non-leader to the leader.
pub const WRITE_PATH: &str = "/cluster/write";
/// Path of the leader's request that a caught-up data node campaign now (hand-over, [`campaign`]).
pub const CAMPAIGN_PATH: &str = "/cluster/campaign";
/// Path of a read-index request: a follower or mirror asks the leader where a linearizable read must start
/// (`Raft::get_read_log_id` on the leader; see [`crate::node::ClusterNode::linearizable_barrier`]). A leader of
/// an older build answers 404, which the asking node reports as an error.
pub const READ_INDEX_PATH: &str = "/cluster/read-index";

/// Server side: how long a connection may take to send a request head, idle keep-alive time included.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Server side: how long a request body may take to arrive once its head is in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Client side: how long an idle pooled connection is kept (shorter than [`IDLE_TIMEOUT`]).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Server side: on shutdown, how long in-flight requests get to finish before their connections are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Whether `given` equals the non-empty `expected` secret, in time that depends only on the lengths.
fn secret_matches(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = 0u8;
    for (i, byte) in expected.iter().enumerate() {
        diff |= byte ^ given.get(i).copied().unwrap_or(0);
    }
    // Non-short-circuiting `&`: every condition is evaluated.
    !expected.is_empty() & (expected.len() == given.len()) & (diff == 0)
}

#[cfg(test)]
mod tests {
    use super::secret_matches;

    #[test]
    fn secret_comparison() {
        assert!(secret_matches(b"s3cret", b"s3cret"));
        assert!(!secret_matches(b"s3cret", b"s3creT"));
        assert!(!secret_matches(b"s3cret", b"s3cre"));
        assert!(!secret_matches(b"s3cret", b"s3crets"));
        assert!(!secret_matches(b"s3cret", b""));
        assert!(!secret_matches(b"", b""));
    }
}
