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
    let (mut a, mut b, w) = harness::pair_with_witness(root.path());
    assert_eq!(a.status()["mode"], "full+witness");
    // A third data node is refused with a clear message.
    let mut c = Node::new(root.path(), "c", "data");
    c.start(true);
    let refused = b.cli(&["servers", "add", "c", "--api", &c.api]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("at most two data nodes"));
    c.kill();

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
    let (mut a, mut b, w) = harness::pair_with_witness(root.path());
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

#[test]
fn pair_without_witness_refuses_writes_fast_and_recovers_by_force() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, mut b) = harness::pair(root.path());
    for i in 0..5 {
        a.ok(&["put", "notes", &format!("n{i}"), "{}"]);
    }
    b.wait_status("b applied", Duration::from_secs(10), |s| s["revision"] == 5);
    let leader = leader_of(&a).unwrap();
    // Kill b: whichever led, a is left without a quorum.
    b.kill();
    if leader == "b" {
        a.wait_status("a notices", Duration::from_secs(10), |s| {
            s["leader"].is_null() || s["degraded"] == true
        });
    }
    let started = Instant::now();
    let refused = a.cli(&["put", "notes", "lost", "{}"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("quorum lost"), "{stderr}");
    assert!(
        stderr.contains("b (") && stderr.contains("--force-standalone"),
        "names the peer and the way out: {stderr}"
    );
    assert!(took < Duration::from_secs(7), "fails fast (well before the 10 s write timeout), took {took:?}");
    // Boots and local reads keep working, and the node says it is degraded.
    assert_eq!(a.json(&["get", "notes", "n4"])["document"]["id"], "n4");
    a.wait_status("degraded", Duration::from_secs(10), |s| s["degraded"] == true);

    // The operator forces a to continue alone.
    assert!(a.stop());
    let output = harness::cli(
        "http://unused",
        &[
            "recover",
            "--data-dir",
            a.data_dir.to_str().unwrap(),
            "--force-standalone",
            "--reason",
            "b burned",
        ],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    a.start(false);
    let revision =
        put_retrying(&[&a], "after-recovery", "{}", Duration::from_secs(20)).expect("a takes writes");
    assert!(revision >= 6);
    // The node records the recovery once it leads (after an election: a node that led restarts as a
    // candidate), which may be just after the write above.
    let deadline = Instant::now() + Duration::from_secs(10);
    let recovery = loop {
        let found = a.history().into_iter().find(|e| e["changes"][0]["collection"] == "cluster_events");
        match found {
            Some(event) => break event,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => panic!("no recovery event in a's history 10 s after it took writes"),
        }
    };
    assert_eq!(recovery["reason"], "b burned");
    assert_eq!(a.status()["mode"], "single");

    // b comes back with its stale history: refused, it cannot disturb a, and it says what to do.
    b.start(false);
    std::thread::sleep(Duration::from_secs(3));
    let write = b.cli(&["put", "notes", "from-b", "{}"]);
    assert!(!write.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log_text().contains("not a member of this cluster") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(b.log_text().contains("wipe its data"), "b's log explains the refusal:\n{}", b.log_text());
    assert_eq!(leader_of(&a).as_deref(), Some("a"));
    assert!(a.cli(&["get", "notes", "from-b"]).status.code() == Some(1));
    put_retrying(&[&a], "still-writable", "{}", Duration::from_secs(10)).expect("a still takes writes");
}

#[test]
fn a_mirror_serves_reads_refuses_writes_and_can_be_promoted() {
    let root = tempfile::tempdir().unwrap();
    let (mut p, mut m) = harness::primary_with_mirror(root.path(), "primary", "mirror");
    for i in 0..3 {
        p.ok(&["put", "notes", &format!("n{i}"), "{\"v\":1}"]);
    }
    m.wait_status("mirror applied", Duration::from_secs(10), |s| s["revision"] == 3);
    assert_eq!(p.status()["mode"], "mirrored");

    let refused = m.cli(&["put", "notes", "x", "{}"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr.contains("read-only mirror") && stderr.contains("primary"), "{stderr}");

    p.kill();
    assert_eq!(m.json(&["get", "notes", "n2"])["document"]["document"]["v"], 1, "reads keep working");
    assert!(!m.cli(&["put", "notes", "x", "{}"]).status.success());

    assert!(m.stop());
    let output = harness::cli(
        "http://unused",
        &["recover", "--data-dir", m.data_dir.to_str().unwrap(), "--force-standalone"],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    m.start(false);
    put_retrying(&[&m], "promoted", "{}", Duration::from_secs(20)).expect("the promoted mirror takes writes");
    assert_eq!(m.status()["role"], "data");
}

#[test]
fn a_new_node_catches_up_through_a_snapshot_with_history_and_blobs() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::new(root.path(), "a", "data").with_env("TANDEM_RAFT_SNAPSHOT_LOGS", "20");
    let mut b = Node::new(root.path(), "b", "data").with_env("TANDEM_RAFT_SNAPSHOT_LOGS", "20");
    a.start(false);
    let firmware: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    let blob_file = root.path().join("firmware.bin");
    std::fs::write(&blob_file, &firmware).unwrap();
    let upload = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", blob_file.display()))
        .arg(format!("http://{}/v1/blobs", a.api))
        .output()
        .unwrap();
    assert!(upload.status.success(), "{}", String::from_utf8_lossy(&upload.stdout));
    let blob: Value = serde_json::from_slice(&upload.stdout).unwrap();
    let digest = blob["digest"].as_str().unwrap().to_string();
    assert_eq!(blob["size"], firmware.len());
    let doc = format!("{{\"version\":\"1.0\",\"blob\":\"{digest}\",\"size\":{}}}", firmware.len());
    a.ok(&["put", "firmware", "fw1", &doc]);
    for i in 0..60 {
        a.ok(&["put", "notes", &format!("n{i}"), &format!("{{\"i\":{i}}}")]);
    }
    // The log has been purged behind a snapshot: b can only catch up through it.
    a.wait_status("a snapshot and purge", Duration::from_secs(10), |s| {
        s["revision"] == 61 && s["purged_index"].as_u64().is_some_and(|purged| purged > 20)
    });
    b.start(true);
    a.add(&b);
    b.wait_status("b caught up", Duration::from_secs(30), |s| s["revision"] == 61);
    assert_eq!(events_summary(&b), events_summary(&a), "identical history");
    // b continues the chain the snapshot carried: both heads are one, and b's chain checks out.
    let chains = a.json(&["history", "verify"]);
    let heads: Vec<&Value> = chains["nodes"].as_array().unwrap().iter().map(|n| &n["head"]).collect();
    assert_eq!((heads.len(), heads[0]), (2, heads[1]), "{chains}");
    let blob_on_b = b.json(&["get", "firmware", "fw1"]);
    assert_eq!(blob_on_b["document"]["document"]["blob"], digest.as_str());
    // The blob's bytes arrived too: check them in b's store directly.
    b.stop();
    // The snapshot arrived as a file, and b kept only its current snapshot.
    let snapshots: Vec<String> = std::fs::read_dir(b.data_dir.join("snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".snap"))
        .collect();
    assert_eq!(snapshots.len(), 1, "one snapshot file on b: {snapshots:?}");
    assert!(stored_blob(&b.data_dir, &digest) == firmware, "the blob on b has the same bytes");
}

/// The Raft log keeps a blob's chunks only as long as replication needs them: once both nodes hold the blob in
/// a file, each compacts its own log past the chunks (TANDEM_BLOB_COMPACTION_BYTES lowers the 64 MiB
/// threshold), and the blob still reaches a node that joins later, through a snapshot.
#[test]
fn the_raft_log_is_freed_of_blob_chunks_once_the_blob_is_in_the_store() {
    let root = tempfile::tempdir().unwrap();
    let node =
        |name| Node::new(root.path(), name, "data").with_env("TANDEM_BLOB_COMPACTION_BYTES", "1000000");
    let (mut a, mut b) = (node("a"), node("b"));
    a.start(false);
    b.start(true);
    a.add(&b);
    a.wait_status("b is a voter", Duration::from_secs(10), |s| s["mode"] == "full");
    let firmware: Vec<u8> = (0..2_500_000u32).map(|i| (i % 249) as u8).collect();
    let blob_file = root.path().join("firmware.bin");
    std::fs::write(&blob_file, &firmware).unwrap();
    let before = a.status()["last_log_index"].as_u64().unwrap();
    let upload = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", blob_file.display()))
        .arg(format!("http://{}/v1/blobs", a.api))
        .output()
        .unwrap();
    assert!(upload.status.success(), "{}", String::from_utf8_lossy(&upload.stdout));
    // The chunks are entries before + 1 …, the commit after them (the proposer may pack chunks together, and
    // membership entries may interleave): a purge to before + 2 or beyond took the chunks and the commit.
    let after = a.status()["last_log_index"].as_u64().unwrap();
    assert!(after >= before + 2, "the upload went through the log ({before} -> {after})");
    for node in [&a, &b] {
        node.wait_status("the log purged past the blob's chunks", Duration::from_secs(30), |s| {
            s["purged_index"].as_u64().is_some_and(|purged| purged >= before + 2)
        });
    }
    let digest =
        serde_json::from_slice::<Value>(&upload.stdout).unwrap()["digest"].as_str().unwrap().to_string();
    let doc = format!("{{\"version\":\"1.0\",\"blob\":\"{digest}\",\"size\":{}}}", firmware.len());
    a.ok(&["put", "firmware", "fw1", &doc]);
    b.wait_status("b applied the firmware", Duration::from_secs(10), |s| s["revision"] == 1);
    let mut c = Node::new(root.path(), "c", "mirror");
    c.start(true);
    a.add(&c);
    c.wait_status("c caught up", Duration::from_secs(30), |s| s["revision"] == 1);
    c.stop();
    assert!(stored_blob(&c.data_dir, &digest) == firmware, "the blob reached c through a snapshot");
}

#[test]
fn a_database_sled_cannot_load_is_moved_aside_and_rebuilt_from_the_log() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::new(root.path(), "a", "data");
    a.start(false);
    a.ok(&["put", "notes", "n1", r#"{"text": "before the damage"}"#, "--reason", "kept"]);
    a.ok(&["put", "notes", "n2", r#"{"text": "also kept"}"#]);
    let before = events_summary(&a);
    a.kill();
    // Damage every file of sled's beyond recognition; the Raft log is intact.
    for file in std::fs::read_dir(a.data_dir.join("db")).unwrap() {
        let path = file.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, vec![0xA5u8; 64 * 1024]).unwrap();
        }
    }
    a.start(false);
    let status = a.status();
    let rebuilt = status["store_rebuilt"].as_str().expect("status says the store was rebuilt");
    assert!(rebuilt.contains("db.broken-"), "{rebuilt}");
    let shown = a.ok(&["status"]);
    assert!(shown.contains("REBUILT"), "{shown}");
    assert_eq!(events_summary(&a), before, "the history came back from the log");
    let n1 = a.ok(&["get", "notes", "n1"]);
    assert!(n1.contains("before the damage"), "{n1}");
    let kept = std::fs::read_dir(&a.data_dir)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("db.broken-"));
    assert!(kept, "the damaged database is kept for a post-mortem");
}

/// The bytes of the blob `digest` in the store of a stopped node's data directory.
fn stored_blob(data_dir: &std::path::Path, digest: &str) -> Vec<u8> {
    use std::io::Read;
    let store = tandem_storage::Store::open(data_dir).unwrap();
    let mut bytes = Vec::new();
    store
        .open_blob(&tandem_storage::Digest::parse(digest).unwrap())
        .unwrap_or_else(|| panic!("no blob {digest} in {}", data_dir.display()))
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}
