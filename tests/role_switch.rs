//! Full ↔ Mirrored on a running cluster (`tandem servers set NAME --role data|mirror`): real `tandem serve`
//! processes on 127.0.0.1, driven by the `tandem` CLI, with writes flowing through the switch.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Writes `notes/w{i}` through `node` until `stop` (bounded: at most 2,000 writes or 60 s); returns the keys
/// acknowledged and the number of writes that failed.
fn writer(url: String, stop: Arc<AtomicBool>) -> (Vec<String>, usize) {
    let (mut acknowledged, mut failed) = (Vec::new(), 0);
    let started = Instant::now();
    for i in 0..2_000 {
        if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let key = format!("w{i}");
        let output = harness::cli(&url, &["put", "notes", &key, &format!(r#"{{"i":{i}}}"#)]);
        if output.status.success() {
            acknowledged.push(key);
        } else {
            failed += 1;
            eprintln!("write {key} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    (acknowledged, failed)
}

fn server<'a>(servers: &'a Value, name: &str) -> &'a Value {
    servers["servers"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

#[test]
fn a_data_node_becomes_a_mirror_and_back_while_writes_flow() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, w) = harness::pair_with_witness(root.path());
    assert_eq!(a.status()["mode"], "full+witness");

    let stop = Arc::new(AtomicBool::new(false));
    let writes = {
        let (url, stop) = (a.url(), stop.clone());
        thread::spawn(move || writer(url, stop))
    };
    thread::sleep(Duration::from_millis(300));

    // The preview names the resulting mode and what it survives; nothing changes.
    let preview = a.json(&["servers", "set", "b", "--role", "mirror", "--dry-run"]);
    assert_eq!(preview["mode_after"], "mirrored", "{preview}");
    assert_eq!(preview["applied"], false);
    assert!(preview["does_not_survive"].to_string().contains("writes stop"), "{preview}");
    assert_eq!(server(&a.json(&["servers", "list"]), "b")["voter"], true);

    // Full -> Mirrored.
    let switched = a.json(&["servers", "set", "b", "--role", "mirror", "--yes"]);
    assert_eq!(switched["applied"], true, "{switched}");
    let servers = a.json(&["servers", "list"]);
    assert_eq!(server(&servers, "b")["role"], "mirror");
    assert_eq!(server(&servers, "b")["voter"], false);
    b.wait_status("b to see itself a mirror", Duration::from_secs(10), |s| {
        s["role"] == "mirror" && s["mode"] == "mirrored"
    });
    // b refuses writes now, naming the primary, and keeps serving reads.
    let refused = b.cli(&["put", "notes", "on-b", "{}"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("mirror"), "{refused:?}");
    thread::sleep(Duration::from_millis(300));

    // Mirrored -> Full.
    let back = a.json(&["servers", "set", "b", "--role", "data", "--yes"]);
    assert_eq!(back["applied"], true, "{back}");
    assert_eq!(back["mode_after"], "full+witness");
    b.wait_status("b to be a data node again", Duration::from_secs(10), |s| {
        s["role"] == "data" && s["mode"] == "full+witness"
    });
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, failed) = writes.join().unwrap();
    assert_eq!(failed, 0, "writes failed during the switches");
    assert!(acknowledged.len() >= 10, "only {} writes went through", acknowledged.len());

    // b accepts writes again, and both data nodes hold every acknowledged write.
    b.ok(&["put", "notes", "on-b", "{}"]);
    for node in [&a, &b] {
        node.wait_status("the last write applied", Duration::from_secs(10), |s| {
            s["applied_index"] == a.status()["applied_index"]
        });
        let listed = node.json(&["list", "notes", "--consistency", "linearizable"]);
        let ids: Vec<&str> =
            listed["documents"].as_array().unwrap().iter().filter_map(|d| d["id"].as_str()).collect();
        for key in &acknowledged {
            assert!(ids.contains(&key.as_str()), "{} lost the acknowledged write {key}", node.name);
        }
    }
    drop(w);
}

#[test]
fn switches_that_would_break_the_cluster_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, mut w) = harness::pair_with_witness(root.path());

    // The leader does not demote itself.
    let own = a.cli(&["servers", "set", "a", "--role", "mirror", "--yes"]);
    assert!(!own.status.success());
    assert!(String::from_utf8_lossy(&own.stderr).contains("cannot demote itself"), "{own:?}");
    // A witness holds no replica.
    let witness = a.cli(&["servers", "set", "w", "--role", "data", "--yes"]);
    assert!(String::from_utf8_lossy(&witness.stderr).contains("witness"), "{witness:?}");
    // Unknown names.
    let unknown = a.cli(&["servers", "set", "zz", "--role", "mirror", "--yes"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no server named"), "{unknown:?}");

    // With the witness down, demoting b would leave a alone of the voters {a, w}: refused, nothing changes.
    w.kill();
    thread::sleep(Duration::from_secs(2));
    let no_quorum = a.cli(&["servers", "set", "b", "--role", "mirror", "--yes"]);
    assert!(!no_quorum.status.success());
    let stderr = String::from_utf8_lossy(&no_quorum.stderr);
    assert!(stderr.contains("no quorum") && stderr.contains('w'), "{stderr}");
    assert_eq!(server(&a.json(&["servers", "list"]), "b")["role"], "data");
    drop(b);
}

#[test]
fn a_mirror_started_as_one_becomes_a_data_node_that_takes_over_when_the_primary_dies() {
    let root = tempfile::tempdir().unwrap();
    let mut a = harness::Node::new(root.path(), "a", "data");
    let mut w = harness::Node::new(root.path(), "w", "witness");
    let mut m = harness::Node::new(root.path(), "m", "mirror");
    a.start(false);
    w.start(true);
    m.start(true);
    a.add(&w);
    a.add(&m);
    for i in 0..20 {
        a.ok(&["put", "notes", &format!("before-{i}"), "{}"]);
    }
    assert_eq!(a.status()["mode"], "mirrored");

    let promoted = a.json(&["servers", "set", "m", "--role", "data", "--yes"]);
    assert_eq!(promoted["mode_after"], "full+witness", "{promoted}");
    assert_eq!(server(&a.json(&["servers", "list"]), "m")["voter"], true);
    m.ok(&["put", "notes", "through-m", "{}"]);

    // The promoted node is a full voter: with the primary gone, it is elected and takes writes.
    a.kill();
    let status = m.wait_status("m to lead", Duration::from_secs(15), |s| s["leader_name"] == "m");
    assert_eq!(status["role"], "data");
    m.ok(&["put", "notes", "after-failover", "{}"]);
    let listed = m.json(&["list", "notes"]);
    assert_eq!(listed["documents"].as_array().unwrap().len(), 22, "{listed}");
    drop(w);
}
