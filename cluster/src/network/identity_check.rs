//! A member is always who it says it is: the identity checks every peer request passes.
//!
//! Every request names its cluster ([`super::CLUSTER_ID_HEADER`]), its sender ([`super::NODE_ID_HEADER`]) and
//! the node it is meant for ([`super::TARGET_ID_HEADER`]). The receiver compares them with its own
//! [`LocalIdentity`] ([`check_request`]) and refuses (403, with the [`super::REFUSAL_HEADER`] naming the
//! [`RefusalKind`]) a request from another cluster or for another node; the peer endpoint also refuses a
//! sender that is not a member ([`RefusalKind::NotAMember`]). The two situations this catches:
//!
//! - **A replaced disk.** A data node whose directory was emptied starts with a new node id at the old
//!   address. Without `--join` it founds a cluster of its own (another cluster id); with `--join` it has no
//!   cluster id yet. Either way the leader's requests name the *old* node id, and are refused: the leader
//!   never counts the newcomer as the old member, and shows the peer as `refused`.
//! - **Two clusters at each other's addresses** (a node founded a second cluster at its old address): the
//!   cluster ids differ.
//!
//! The refusal is typed on both sides: the sender gets [`Refusal`] (not a network failure) and records it for
//! `tandem status`; the receiver keeps a [`RefusedSender`] per sender for its own status, and logs the first
//! refusal and then at most one line per [`LOG_EVERY`] per sender, not one per heartbeat.
//!
//! A node that has no cluster id yet (started with `--join`, not added) accepts the first request addressed
//! to its own node id and *learns* the sender's cluster id from it, durably (`node.json`) before the request
//! reaches Raft ([`Verdict::Learn`]). Only a leader that was told this node's random id (by
//! `tandem servers add`, which asks the node) can address it, so a stray cluster cannot claim it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hyper::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::identity::{Identity, IdentityError};
use crate::types::NodeId;

/// A refused sender is logged at most once per this long (with the count since).
pub const LOG_EVERY: Duration = Duration::from_secs(30);
/// A refusal older than this is no longer shown by `tandem status`.
pub const SHOWN_FOR: Duration = Duration::from_secs(300);
/// At most this many refused senders are remembered (a flood of made-up sender ids cannot grow the table).
const MAX_REFUSED_SENDERS: usize = 64;

/// Why a peer refused a request, as the [`super::REFUSAL_HEADER`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    /// The request carries another cluster id than the receiver's (or none, while the receiver has one).
    OtherCluster,
    /// The request is meant for another node id than the receiver's: the node once at that address is gone.
    OtherNode,
    /// The sender is not in the receiver's membership: it was removed, or recovered without.
    NotAMember,
}

impl RefusalKind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::OtherCluster => "other-cluster",
            RefusalKind::OtherNode => "other-node",
            RefusalKind::NotAMember => "not-a-member",
        }
    }

    /// The kind a header value names, if any.
    pub fn parse(text: &str) -> Option<RefusalKind> {
        [RefusalKind::OtherCluster, RefusalKind::OtherNode, RefusalKind::NotAMember]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// A peer's refusal of a request because of who sent it or whom it was for; the message says what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

/// The identity fields of one request, as its headers give them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestIds {
    pub sender: Option<NodeId>,
    pub target: Option<NodeId>,
    pub cluster: Option<String>,
}

impl RequestIds {
    /// Reads the identity headers; a header that is present but unreadable is an error (400).
    pub fn from_headers(headers: &HeaderMap) -> Result<RequestIds, String> {
        let text = |name: &str| -> Result<Option<&str>, String> {
            headers
                .get(name)
                .map(|v| v.to_str().map_err(|_| format!("the {name} header is not text")))
                .transpose()
        };
        let id = |name: &str| -> Result<Option<NodeId>, String> {
            text(name)?
                .map(|v| v.parse().map_err(|_| format!("the {name} header {v:?} is not a node id")))
                .transpose()
        };
        Ok(RequestIds {
            sender: id(super::NODE_ID_HEADER)?,
            target: id(super::TARGET_ID_HEADER)?,
            cluster: text(super::CLUSTER_ID_HEADER)?.map(str::to_owned),
        })
    }
}

/// What to do with a request, given who it says it is from and for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Accept, after recording this cluster id as this node's (it had none).
    Learn(String),
    Refuse(Refusal),
}

/// Compares a request's ids with this node's id `me` and cluster id `mine` (see the module docs).
///
/// The cluster is compared first: a node of another cluster is told so even if the node id is also wrong.
/// A request that names no target is refused too (every build that speaks this protocol names one).
pub fn check_request(me: NodeId, mine: Option<&str>, request: &RequestIds) -> Verdict {
    let sender = || request.sender.map_or_else(|| "an unnamed node".to_owned(), |id| format!("node {id}"));
    let theirs = request.cluster.as_deref();
    if let Some(mine) = mine
        && theirs != Some(mine)
    {
        let theirs = theirs.map_or_else(|| "no cluster yet".to_owned(), |c| format!("cluster {c}"));
        return Verdict::Refuse(Refusal {
            kind: RefusalKind::OtherCluster,
            message: format!(
                "this is node {me} of cluster {mine}, but the request comes from {} of {theirs}: \
                 they are different clusters. If this node's data directory was replaced (or it founded a cluster \
                 of its own at an address the other cluster knows) and it should be a member of the other \
                 cluster: there, remove the old member with `tandem servers remove NAME`; here, stop this node, \
                 empty its data directory and start it with --join; then add it with `tandem servers add NAME \
                 --api ADDR`",
                sender()
            ),
        });
    }
    match request.target {
        Some(target) if target == me => {}
        target => {
            let meant = target.map_or_else(|| "no node".to_owned(), |t| format!("node {t}"));
            return Verdict::Refuse(Refusal {
                kind: RefusalKind::OtherNode,
                message: format!(
                    "{} sent a request meant for {meant}, but this is node {me}: the member that was \
                     at this address lost its data directory or was replaced. Remove the old member with \
                     `tandem servers remove NAME`, then add this node as a new one with `tandem servers add \
                     NAME --api ADDR` (it must run with --join)",
                    sender()
                ),
            });
        }
    }
    match (mine, theirs) {
        (None, Some(theirs)) => Verdict::Learn(theirs.to_owned()),
        _ => Verdict::Accept,
    }
}

/// Requests refused from one sender (for `tandem status` on the refusing node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedSender {
    /// The sender's node id, if it named one.
    pub sender: Option<NodeId>,
    /// The cluster id the sender's requests carried.
    pub sender_cluster: Option<String>,
    /// The address its last refused request came from.
    pub remote: String,
    pub kind: RefusalKind,
    pub message: String,
    /// Requests refused so far.
    pub count: u64,
    /// When the last one was refused (Unix milliseconds).
    pub last_at_ms: u64,
}

/// This node's identity as the peer network uses it: the client half sends it, the server half checks
/// requests against it and learns the cluster id once. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct LocalIdentity(Arc<Shared>);

/// Refused senders by (sender, kind), each with when it was last logged.
type RefusedSenders = BTreeMap<(Option<NodeId>, RefusalKind), (RefusedSender, SystemTime)>;

#[derive(Debug)]
struct Shared {
    node_id: NodeId,
    cluster_id: Mutex<Option<String>>,
    /// Where a learned cluster id is recorded (`node.json`); `None`: in memory only (tests).
    data_dir: Option<PathBuf>,
    /// Refused senders, by (sender, kind), with when each was last logged.
    refused: Mutex<RefusedSenders>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl LocalIdentity {
    /// The identity of a node whose `node.json` lives in `data_dir` (where a learned cluster id is recorded).
    pub fn new(identity: &Identity, data_dir: PathBuf) -> LocalIdentity {
        Self::build(identity.id, identity.cluster_id.clone(), Some(data_dir))
    }

    /// An identity kept in memory only (tests, tools).
    pub fn in_memory(node_id: NodeId, cluster_id: Option<String>) -> LocalIdentity {
        Self::build(node_id, cluster_id, None)
    }

    fn build(node_id: NodeId, cluster_id: Option<String>, data_dir: Option<PathBuf>) -> LocalIdentity {
        LocalIdentity(Arc::new(Shared {
            node_id,
            cluster_id: Mutex::new(cluster_id),
            data_dir,
            refused: Mutex::new(BTreeMap::new()),
        }))
    }

    pub fn node_id(&self) -> NodeId {
        self.0.node_id
    }

    /// The cluster id, once this node founded or joined a cluster.
    pub fn cluster_id(&self) -> Option<String> {
        lock(&self.0.cluster_id).clone()
    }

    /// Checks a request (see [`check_request`]); learns the cluster id if the verdict says so, durably before
    /// returning. The lock is held while recording, so two requests cannot learn two different ids.
    pub fn admit(&self, request: &RequestIds) -> Result<Verdict, IdentityError> {
        let mut mine = lock(&self.0.cluster_id);
        let verdict = check_request(self.0.node_id, mine.as_deref(), request);
        if let Verdict::Learn(cluster_id) = &verdict {
            self.record_locked(&mut mine, cluster_id)?;
            tracing::info!(cluster_id, "this node joined a cluster: recorded its cluster id");
        }
        Ok(verdict)
    }

    /// Records `cluster_id` as this node's, durably (`node.json`), then in memory: for a node that founds a
    /// cluster (and, through [`LocalIdentity::admit`], one that joins).
    pub fn record_cluster_id(&self, cluster_id: &str) -> Result<(), IdentityError> {
        self.record_locked(&mut lock(&self.0.cluster_id), cluster_id)
    }

    fn record_locked(&self, mine: &mut Option<String>, cluster_id: &str) -> Result<(), IdentityError> {
        if let Some(data_dir) = &self.0.data_dir {
            Identity::record_cluster_id(data_dir, cluster_id)?;
        }
        *mine = Some(cluster_id.to_owned());
        Ok(())
    }

    /// Notes a refused request for status, and logs it unless this sender was logged less than
    /// [`LOG_EVERY`] ago.
    pub fn note_refused(&self, request: &RequestIds, remote: &str, refusal: &Refusal) {
        let now = SystemTime::now();
        let mut refused = lock(&self.0.refused);
        let key = (request.sender, refusal.kind);
        if !refused.contains_key(&key) && refused.len() >= MAX_REFUSED_SENDERS {
            let since = unix_ms(now).saturating_sub(SHOWN_FOR.as_millis() as u64);
            refused.retain(|_, (entry, _)| entry.last_at_ms >= since);
            if refused.len() >= MAX_REFUSED_SENDERS {
                tracing::debug!(remote, "peer endpoint: {refusal}");
                return;
            }
        }
        let (entry, logged_at) = refused.entry(key).or_insert_with(|| {
            let entry = RefusedSender {
                sender: request.sender,
                sender_cluster: None,
                remote: String::new(),
                kind: refusal.kind,
                message: String::new(),
                count: 0,
                last_at_ms: 0,
            };
            (entry, SystemTime::UNIX_EPOCH)
        });
        entry.count += 1;
        entry.last_at_ms = unix_ms(now);
        entry.remote = remote.to_owned();
        entry.sender_cluster = request.cluster.clone();
        entry.message = refusal.message.clone();
        if now.duration_since(*logged_at).unwrap_or_default() >= LOG_EVERY {
            *logged_at = now;
            tracing::warn!(
                remote,
                kind = refusal.kind.as_str(),
                refused = entry.count,
                "peer endpoint: {refusal}"
            );
        }
    }

    /// The senders refused within the last [`SHOWN_FOR`], most recent first.
    pub fn refused_senders(&self) -> Vec<RefusedSender> {
        let since = unix_ms(SystemTime::now()).saturating_sub(SHOWN_FOR.as_millis() as u64);
        let mut shown: Vec<RefusedSender> = lock(&self.0.refused)
            .values()
            .filter(|(entry, _)| entry.last_at_ms >= since)
            .map(|(entry, _)| entry.clone())
            .collect();
        shown.sort_by_key(|refused| std::cmp::Reverse(refused.last_at_ms));
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(sender: Option<NodeId>, target: Option<NodeId>, cluster: Option<&str>) -> RequestIds {
        RequestIds { sender, target, cluster: cluster.map(str::to_owned) }
    }

    fn refused(verdict: Verdict) -> Refusal {
        match verdict {
            Verdict::Refuse(refusal) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_same_cluster_and_node_are_accepted() {
        assert_eq!(check_request(7, Some("c1"), &ids(Some(2), Some(7), Some("c1"))), Verdict::Accept);
        // A sender need not name itself (the membership check needs it, this one does not).
        assert_eq!(check_request(7, Some("c1"), &ids(None, Some(7), Some("c1"))), Verdict::Accept);
    }

    #[test]
    fn another_cluster_is_refused_naming_both_ids_and_what_to_do() {
        let refusal = refused(check_request(7, Some("c1"), &ids(Some(2), Some(7), Some("c2"))));
        assert_eq!(refusal.kind, RefusalKind::OtherCluster);
        for part in
            ["cluster c1", "cluster c2", "this is node 7 ", "from node 2 ", "servers remove", "--join"]
        {
            assert!(refusal.message.contains(part), "{part:?} missing: {}", refusal.message);
        }
        // The cluster is named even when the target is wrong too.
        let refusal = refused(check_request(7, Some("c1"), &ids(Some(2), Some(8), Some("c2"))));
        assert_eq!(refusal.kind, RefusalKind::OtherCluster);
        // A sender with no cluster yet is not of this one.
        let refusal = refused(check_request(7, Some("c1"), &ids(Some(2), Some(7), None)));
        assert_eq!(refusal.kind, RefusalKind::OtherCluster);
        assert!(refusal.message.contains("no cluster yet"), "{}", refusal.message);
    }

    #[test]
    fn another_or_no_target_is_refused() {
        let refusal = refused(check_request(7, Some("c1"), &ids(Some(2), Some(8), Some("c1"))));
        assert_eq!(refusal.kind, RefusalKind::OtherNode);
        assert!(refusal.message.contains("meant for node 8, but this is node 7:"), "{}", refusal.message);
        assert!(refusal.message.contains("servers add"), "{}", refusal.message);
        let refusal = refused(check_request(7, Some("c1"), &ids(Some(2), None, Some("c1"))));
        assert_eq!(refusal.kind, RefusalKind::OtherNode);
        // A node without a cluster id refuses a request for another node too (it learns nothing from it).
        let refusal = refused(check_request(7, None, &ids(Some(2), Some(8), Some("c1"))));
        assert_eq!(refusal.kind, RefusalKind::OtherNode);
    }

    #[test]
    fn a_node_without_a_cluster_learns_it_once_and_durably() {
        assert_eq!(check_request(7, None, &ids(Some(2), Some(7), Some("c1"))), Verdict::Learn("c1".into()));
        assert_eq!(check_request(7, None, &ids(Some(2), Some(7), None)), Verdict::Accept);

        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::load_or_create(dir.path(), "b", Some("s")).unwrap();
        let local = LocalIdentity::new(&identity, dir.path().to_path_buf());
        assert_eq!(
            local.admit(&ids(Some(2), Some(identity.id), Some("c1"))).unwrap(),
            Verdict::Learn("c1".into())
        );
        assert_eq!(local.cluster_id().as_deref(), Some("c1"));
        assert_eq!(Identity::load(dir.path()).unwrap().unwrap().cluster_id.as_deref(), Some("c1"));
        // Once learned, another cluster is refused.
        let verdict = local.admit(&ids(Some(3), Some(identity.id), Some("c2"))).unwrap();
        assert_eq!(refused(verdict).kind, RefusalKind::OtherCluster);
        assert_eq!(local.cluster_id().as_deref(), Some("c1"));
    }

    #[test]
    fn headers_are_read_and_bad_ones_are_errors() {
        let mut headers = HeaderMap::new();
        assert_eq!(RequestIds::from_headers(&headers).unwrap(), RequestIds::default());
        headers.insert(super::super::NODE_ID_HEADER, "2".parse().unwrap());
        headers.insert(super::super::TARGET_ID_HEADER, "7".parse().unwrap());
        headers.insert(super::super::CLUSTER_ID_HEADER, "c1".parse().unwrap());
        assert_eq!(RequestIds::from_headers(&headers).unwrap(), ids(Some(2), Some(7), Some("c1")));
        headers.insert(super::super::TARGET_ID_HEADER, "seven".parse().unwrap());
        let error = RequestIds::from_headers(&headers).unwrap_err();
        assert!(error.contains("x-tandem-target-node-id") && error.contains("seven"), "{error}");
    }

    #[test]
    fn refusals_are_counted_per_sender_and_kind() {
        let local = LocalIdentity::in_memory(7, Some("c1".into()));
        let request = ids(Some(2), Some(8), Some("c1"));
        let refusal = refused(check_request(7, Some("c1"), &request));
        for _ in 0..5 {
            local.note_refused(&request, "127.0.0.1:1", &refusal);
        }
        let other = ids(Some(3), Some(7), Some("c9"));
        local.note_refused(&other, "127.0.0.1:2", &refused(check_request(7, Some("c1"), &other)));
        let shown = local.refused_senders();
        assert_eq!(shown.len(), 2);
        let from_2 = shown.iter().find(|s| s.sender == Some(2)).unwrap();
        assert_eq!((from_2.count, from_2.kind), (5, RefusalKind::OtherNode));
        let from_3 = shown.iter().find(|s| s.sender == Some(3)).unwrap();
        assert_eq!(from_3.sender_cluster.as_deref(), Some("c9"));
        assert_eq!(RefusalKind::parse(from_3.kind.as_str()), Some(RefusalKind::OtherCluster));
        assert_eq!(RefusalKind::parse("nonsense"), None);

        // Made-up sender ids cannot grow the table without bound; known senders are still counted.
        for sender in 100..100 + 2 * MAX_REFUSED_SENDERS as u64 {
            local.note_refused(&ids(Some(sender), Some(8), Some("c1")), "127.0.0.1:3", &refusal);
        }
        assert_eq!(local.refused_senders().len(), MAX_REFUSED_SENDERS);
        local.note_refused(&request, "127.0.0.1:1", &refusal);
        let from_2 = local.refused_senders().into_iter().find(|s| s.sender == Some(2)).unwrap();
        assert_eq!(from_2.count, 6);
    }
}
