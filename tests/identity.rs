//! A member is always who it says it is: a data node whose data directory was emptied (a replaced disk) comes
//! back at the same address with a new node id, and is refused as the member it replaced — by its cluster id
//! when it founded a cluster of its own, by its node id when it waits to join — until the operator removes the
//! old member and adds the new node. Real `tandem serve` processes on 127.0.0.1, driven by the `tandem` CLI.

mod harness;

use std::time::{Duration, Instant};

use harness::Node;
use serde_json::Value;

/// The peer named `name` in a status.
fn peer<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

/// A pair with a witness, `count` notes written through `a` and applied on `b`; returns the nodes.
fn pair_with_notes(root: &std::path::Path, count: usize) -> (Node, Node, Node) {
    let (a, b, w) = harness::pair_with_witness(root);
    for i in 0..count {
        a.ok(&["put", "notes", &format!("before-{i}"), "{}"]);
    }
    b.wait_status("b applied", Duration::from_secs(10), |s| s["revision"] == count as u64);
    assert_eq!(a.status()["leader_name"], "a", "the founder leads");
    (a, b, w)
}

/// Kills `node`, empties its data directory (a replaced disk) and starts it again at the same addresses.
fn replace_disk(node: &mut Node, join: bool) {
    node.kill();
    std::fs::remove_dir_all(&node.data_dir).unwrap();
    node.start(join);
}

/// Writes `count` notes through `node`; every one must be acknowledged.
fn write_notes(node: &Node, prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let key = format!("{prefix}-{i}");
            node.ok(&["put", "notes", &key, "{}"]);
            key
        })
        .collect()
}

/// Every key is in `node`'s store and the history has exactly `events` events, gap-free.
fn assert_holds(node: &Node, keys: &[String], events: u64) {
    for key in keys {
        let document = node.json(&["get", "notes", key]);
        assert_eq!(document["document"]["id"], key.as_str(), "{key} on {}", node.name);
    }
    let revisions: Vec<u64> = node.history().iter().filter_map(|e| e["revision"].as_u64()).collect();
    assert_eq!(revisions, (1..=events).collect::<Vec<_>>(), "{}'s history", node.name);
}

#[test]
fn a_replaced_disk_without_join_founds_another_cluster_and_is_refused_as_the_old_member() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b, _w) = pair_with_notes(root.path(), 5);
    let cluster = a.status()["cluster_id"].as_str().expect("a cluster id").to_owned();
    assert_eq!(b.status()["cluster_id"], cluster.as_str(), "b joined a's cluster and knows its id");
    let old_b = b.status()["id"].as_u64().unwrap();

    replace_disk(&mut b, false);
    let restarted = Instant::now();
    let new_b = b.status();
    assert_ne!(new_b["id"].as_u64(), Some(old_b), "an emptied data directory gets a new node id");
    assert_ne!(new_b["cluster_id"], cluster.as_str(), "and founded a cluster of its own");

    // The leader is told it is another cluster, and never counts it as b: refused, not in sync.
    let status = a.wait_status("b refused", Duration::from_secs(20), |s| peer(s, "b")["sync"] == "refused");
    let b_seen = peer(&status, "b");
    assert_eq!(b_seen["reachable"], false);
    assert_eq!(b_seen["refusal"]["kind"], "other-cluster");
    let message = b_seen["refusal"]["message"].as_str().unwrap();
    assert!(
        message.contains(&cluster) && message.contains(new_b["cluster_id"].as_str().unwrap()),
        "{message}"
    );
    assert!(message.contains("tandem servers remove"), "{message}");
    // One spelling of node ids, the decimal of the API: in refusals, on the status page, at start-up.
    let (a_id, new_b_id) = (a.status()["id"].as_u64().unwrap(), new_b["id"].as_u64().unwrap());
    assert!(
        message.contains(&format!("node {new_b_id} ")) && message.contains(&format!("node {a_id} ")),
        "{message}"
    );
    assert!(b.log_text().contains(&format!("(id {new_b_id}, data)")), "{}", b.log_text());

    // Writes go on with the witness, and stay refused by the new b.
    let after = write_notes(&a, "after", 5);
    let status = a.status();
    assert_eq!(peer(&status, "b")["sync"], "refused", "still refused after writes: {status:#}");
    assert_ne!(peer(&status, "b")["lag_entries"], 0, "b never acknowledged the new entries");

    // The refusing side says whom it refuses and why.
    let refusing = b.wait_status("b notes the refusals", Duration::from_secs(10), |s| {
        s["refusing"].as_array().is_some_and(|r| r.iter().any(|r| r["count"].as_u64() > Some(1)))
    });
    let from_a = &refusing["refusing"][0];
    assert_eq!(from_a["sender"], a.status()["id"]);
    assert_eq!(from_a["sender_cluster"], cluster.as_str());
    assert_eq!(from_a["kind"], "other-cluster");
    assert_eq!(refusing["revision"], 0, "the new b holds nothing of a's cluster");

    // Both human pages show it.
    let page = a.ok(&["status"]);
    assert!(page.contains("REFUSED   b at") && page.contains("other-cluster"), "{page}");
    let page = b.ok(&["status"]);
    assert!(page.contains("REFUSING") && page.contains(&cluster), "{page}");
    assert!(page.contains(&format!("REFUSING  node {a_id} of")), "{page}");

    // The refusals are logged, but not one line per heartbeat.
    let refused = b.status()["refusing"][0]["count"].as_u64().unwrap();
    let logged = b.log_text().lines().filter(|l| l.contains("they are different clusters")).count();
    let allowed = 1 + (restarted.elapsed().as_secs() / 30) as usize;
    assert!(logged <= allowed && (refused as usize) > logged, "{logged} lines for {refused} refusals");

    // Nothing acknowledged was lost on the surviving side.
    let before: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    assert_holds(&a, &[before, after].concat(), 10);
}

#[test]
fn a_replaced_disk_with_join_is_refused_until_the_old_member_is_removed_and_it_is_added_again() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b, w) = pair_with_notes(root.path(), 5);
    let cluster = a.status()["cluster_id"].as_str().unwrap().to_owned();

    replace_disk(&mut b, true);
    let waiting = b.status();
    assert_eq!(waiting["mode"], "joining");
    assert_eq!(waiting["cluster_id"], Value::Null, "a joining node has no cluster id yet");
    assert!(b.ok(&["status"]).contains("cluster   none yet"));

    // The leader's requests name the old b: refused, on both sides, and b learns nothing from them.
    let status = a.wait_status("b refused", Duration::from_secs(20), |s| peer(s, "b")["sync"] == "refused");
    assert_eq!(peer(&status, "b")["refusal"]["kind"], "other-node");
    let refusing = b.wait_status("b notes the refusals", Duration::from_secs(10), |s| {
        s["refusing"].as_array().is_some_and(|r| !r.is_empty())
    });
    assert_eq!(refusing["refusing"][0]["kind"], "other-node");
    assert_eq!(refusing["cluster_id"], Value::Null, "a request for another node teaches nothing");
    assert_eq!(refusing["mode"], "joining");
    let during = write_notes(&a, "during", 3);

    // The documented steps: remove the old member, add the new node.
    a.ok(&["servers", "remove", "b"]);
    a.add(&b);
    let status = b.wait_status("b caught up", Duration::from_secs(30), |s| s["revision"] == 8);
    assert_eq!(status["cluster_id"], cluster.as_str(), "b learned its cluster's id from the leader");
    let recorded: Value =
        serde_json::from_slice(&std::fs::read(b.data_dir.join("node.json")).unwrap()).unwrap();
    assert_eq!(recorded["cluster_id"], cluster.as_str(), "and recorded it in node.json");
    let status = a.wait_status("b in sync", Duration::from_secs(20), |s| peer(s, "b")["sync"] == "in_sync");
    assert_eq!(status["mode"], "full+witness");
    assert_eq!(peer(&status, "b")["refusal"], Value::Null);

    // The cluster is whole again: new writes reach b, and both hold everything acknowledged.
    let after = write_notes(&a, "after", 2);
    b.wait_status("b applied", Duration::from_secs(10), |s| s["revision"] == 10);
    let before: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    let all = [before, during, after].concat();
    assert_holds(&a, &all, 10);
    assert_holds(&b, &all, 10);
    drop(w);
}

#[test]
fn a_data_directory_from_before_cluster_ids_takes_its_stores_id() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::new(root.path(), "a", "data");
    a.start(false);
    a.ok(&["put", "notes", "n1", "{}"]);
    let cluster = a.status()["cluster_id"].as_str().unwrap().to_owned();
    let exported: Value = serde_json::from_str(&a.ok(&["export"])).unwrap();
    assert_eq!(exported["cluster_id"], cluster.as_str(), "node.json and the store agree");
    a.stop();

    // node.json as an older build wrote it: no cluster id.
    let path = a.data_dir.join("node.json");
    let mut identity: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    identity.as_object_mut().unwrap().remove("cluster_id");
    std::fs::write(&path, serde_json::to_vec(&identity).unwrap()).unwrap();

    a.start(false);
    assert_eq!(a.status()["cluster_id"], cluster.as_str());
    let recorded: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(recorded["cluster_id"], cluster.as_str(), "recorded again at start");
    assert_eq!(a.status()["revision"], 1);
}

#[test]
fn a_pair_without_witness_names_the_refusal_when_it_refuses_writes() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b) = harness::pair(root.path());
    a.ok(&["put", "notes", "n1", "{}"]);
    b.wait_status("b applied", Duration::from_secs(10), |s| s["revision"] == 1);
    assert_eq!(a.status()["leader_name"], "a");

    replace_disk(&mut b, true);
    a.wait_status("b refused", Duration::from_secs(20), |s| peer(s, "b")["sync"] == "refused");
    // The leader has lost its quorum: the write is refused, and the error says why b does not count.
    let refused = a.cli(&["put", "notes", "lost", "{}"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("quorum lost") && stderr.contains("refuses this node"), "{stderr}");
    assert!(stderr.contains("lost its data directory or was replaced"), "{stderr}");
    assert_eq!(a.status()["revision"], 1, "nothing was written");
}
