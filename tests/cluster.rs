//! End-to-end tests of replication: real `tandem serve` processes on 127.0.0.1, driven by the `tandem` CLI,
//! killed with SIGKILL and restarted.

mod harness;

use std::time::{Duration, Instant};

use harness::{Node, SECRET};
use serde_json::Value;

fn leader_of(node: &Node) -> Option<String> {
    node.status()["leader_name"].as_str().map(str::to_string)
}

/// Writes `key` through `node` with a request id, retrying (bounded) while the cluster fails over.
/// Returns the revision it landed at, or None if it never did.
fn put_retrying(nodes: &[&Node], key: &str, value: &str, deadline: Duration) -> Option<u64> {
    let until = Instant::now() + deadline;
    let request_id = format!("req-{key}");
    let mut attempt = 0usize;
    while Instant::now() < until {
        let node = nodes[attempt % nodes.len()];
        attempt += 1;
        let output = node.cli(&["put", "notes", key, value, "--request-id", &request_id, "--json"]);
        if output.status.success() {
            let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
            return answer["revision"].as_u64();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn events_summary(node: &Node) -> Vec<(u64, String)> {
    node.history()
        .iter()
        .map(|e| (e["revision"].as_u64().unwrap(), e["changes"][0]["id"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn pair_with_witness_fails_over_without_losing_acknowledged_writes() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::new(root.path(), "a", "data");
    let mut b = Node::new(root.path(), "b", "data");
    let mut w = Node::new(root.path(), "w", "witness");
    a.start(false);
    b.start(true);
    w.start(true);
    a.add(&b);
    a.add(&w);
    assert_eq!(a.status()["mode"], "full+witness");

    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    let mut killed: Option<String> = None;
    for i in 0..200 {
        if i == 100 {
            let leader = leader_of(&a).expect("a leader");
            if leader == "a" {
                a.kill()
            } else {
                b.kill()
            }
            killed = Some(leader);
        }
        let alive: Vec<&Node> = match killed.as_deref() {
            Some("a") => vec![&b],
            Some("b") => vec![&a],
            _ => vec![&a, &b],
        };
        let key = format!("k{i}");
        let through = [alive[i % alive.len()]];
        let revision = put_retrying(&through, &key, &format!("{{\"i\":{i}}}"), Duration::from_secs(20))
            .unwrap_or_else(|| panic!("write {i} never succeeded"));
        acknowledged.push((key, revision));
    }
    let killed = killed.unwrap();
    let (survivor, dead) = if killed == "a" { (&b, &mut a) } else { (&a, &mut b) };

    // Every acknowledged change is on the survivor, at the revision it was acknowledged with.
    let history = events_summary(survivor);
    assert_eq!(history.len(), 200, "exactly one event per change (request ids made retries safe)");
    for (key, revision) in &acknowledged {
        assert!(
            history.contains(&(*revision, key.clone())),
            "{key}@{revision} missing from the survivor's history"
        );
        let doc = survivor.json(&["get", "notes", key]);
        assert_eq!(doc["document"]["mod_revision"], *revision);
    }
    let revisions: Vec<u64> = history.iter().map(|(r, _)| *r).collect();
    assert_eq!(revisions, (1..=200).collect::<Vec<_>>(), "revisions are gap-free");

    // The killed node restarts, catches up, and holds the same history.
    dead.start(false);
    dead.wait_status("catch up", Duration::from_secs(30), |s| s["revision"] == 200);
    assert_eq!(events_summary(dead), history);
    // The witness followed too (it stores the log), but serves no configuration.
    w.wait_status("witness applied", Duration::from_secs(10), |s| s["revision"] == 200);
    let refused = w.cli(&["get", "notes", "k1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("witness"));
}

#[test]
fn survivor_behind_the_witness_still_gets_a_leader() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::new(root.path(), "a", "data");
    let mut b = Node::new(root.path(), "b", "data");
    let mut w = Node::new(root.path(), "w", "witness");
    a.start(false);
    b.start(true);
    w.start(true);
    a.add(&b);
    a.add(&w);
    a.ok(&["put", "notes", "before", "{}"]);
    b.wait_status("b applied", Duration::from_secs(10), |s| s["revision"] == 1);

    // b stops; a and the witness commit more entries without it.
    b.kill();
    for i in 0..20 {
        a.ok(&["put", "notes", &format!("while-b-down-{i}"), "{}"]);
    }
    // The leader dies; b comes back behind the witness.
    a.kill();
    b.start(false);
    let started = Instant::now();
    let status = b.wait_status("a leader", Duration::from_secs(20), |s| s["leader"].is_u64());
    eprintln!("leader {} elected {:?} after b restarted", status["leader_name"], started.elapsed());
    // Writes land on b (with the witness) and nothing committed before is lost.
    let revision = put_retrying(&[&b], "after", "{}", Duration::from_secs(20)).expect("b takes writes");
    assert_eq!(revision, 22);
    assert_eq!(b.json(&["list", "notes"])["documents"].as_array().unwrap().len(), 22);
    // The witness hands leadership back to b.
    b.wait_status("b leads", Duration::from_secs(20), |s| s["leader_name"] == "b");
    drop(w);
}

#[test]
fn the_peer_port_refuses_requests_without_the_cluster_secret() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::new(root.path(), "a", "data");
    a.start(false);
    a.ok(&["put", "notes", "n1", "{}"]);
    let before = a.status();
    for (header, what) in
        [(None, "no secret"), (Some("x-tandem-cluster-secret: wrong-secret"), "wrong secret")]
    {
        for route in ["raft/vote", "raft/append", "raft/snapshot", "cluster/write"] {
            let mut command = std::process::Command::new("curl");
            command.args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "--data-binary",
                "garbage",
            ]);
            if let Some(header) = header {
                command.args(["-H", header]);
            }
            let output = command.arg(format!("http://{}/{route}", a.peer)).output().expect("curl");
            assert_eq!(String::from_utf8_lossy(&output.stdout), "401", "{what} on /{route}");
        }
    }
    let after = a.status();
    assert_eq!(before["term"], after["term"]);
    assert_eq!(before["last_log_index"], after["last_log_index"]);
    assert_eq!(after["revision"], 1);
    let _ = SECRET;
}
