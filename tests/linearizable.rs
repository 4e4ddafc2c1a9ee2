//! Linearizable reads on every data node and mirror (the read index protocol, `ClusterNode::linearizable_barrier`):
//! real `tandem serve` processes on 127.0.0.1, driven by the `tandem` CLI.

mod harness;

use std::time::{Duration, Instant};

use harness::Node;
use serde_json::Value;

/// Writes `notes/{key}` through `node` and returns the revision it was acknowledged at.
fn put(node: &Node, key: &str, value: &str) -> u64 {
    node.json(&["put", "notes", key, value])["revision"].as_u64().expect("a put answers its revision")
}

/// `tandem get notes KEY --consistency linearizable --json` on `node`.
fn linearizable_get(node: &Node, key: &str) -> Value {
    node.json(&["get", "notes", key, "--consistency", "linearizable"])
}

#[test]
fn every_data_node_and_mirror_reads_the_writes_acknowledged_before_the_read() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, w) = harness::pair_with_witness(root.path());
    let mut m = Node::new(root.path(), "m", "mirror");
    m.start(true);
    a.add(&m);
    let readers = [&a, &b, &m];

    // Each write is acknowledged by one data node (the leader, or a follower that forwards it), then read at
    // once from every reader: the read must see that write (its value and a revision at least the write's).
    for round in 0..12 {
        let writer = if round % 2 == 0 { &a } else { &b };
        let value = format!(r#"{{"round":{round}}}"#);
        let revision = put(writer, "counter", &value);
        for reader in readers {
            let answer = linearizable_get(reader, "counter");
            assert_eq!(
                answer["document"]["document"]["round"].as_u64(),
                Some(round),
                "{} read {answer} after round {round} was acknowledged at revision {revision}",
                reader.name
            );
            assert!(
                answer["document"]["mod_revision"].as_u64() >= Some(revision),
                "{} answered {answer}, older than the acknowledged revision {revision}",
                reader.name
            );
        }
    }

    // A linearizable list too, and a bad consistency is refused before anything is read.
    let last = put(&a, "listed", "{}");
    let listed = m.json(&["list", "notes", "--consistency", "linearizable"]);
    assert!(
        listed["revision"].as_u64() >= Some(last),
        "the mirror listed at {listed} before revision {last}"
    );
    let wrong = b.cli(&["get", "notes", "counter", "--consistency", "eventual"]);
    assert!(!wrong.status.success());

    // The witness serves no configuration, linearizable or not.
    let refused = w.cli(&["get", "notes", "counter", "--consistency", "linearizable"]);
    assert!(!refused.status.success(), "the witness served a read");
}

#[test]
fn a_read_that_cannot_be_linearized_fails_naming_what_is_unreachable_and_local_reads_still_work() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, b, mut w) = harness::pair_with_witness(root.path());
    let mut m = Node::new(root.path(), "m", "mirror");
    m.start(true);
    a.add(&m);
    put(&a, "kept", r#"{"v":1}"#);
    // Both b and the mirror have it before the partition.
    for reader in [&b, &m] {
        assert_eq!(linearizable_get(reader, "kept")["document"]["document"]["v"].as_u64(), Some(1));
    }

    // b and the mirror lose the leader and the witness: no quorum is left to confirm any leader.
    a.kill();
    w.kill();
    for reader in [&b, &m] {
        let started = Instant::now();
        let output = reader.cli(&["get", "notes", "kept", "--consistency", "linearizable"]);
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        eprintln!("{} refused in {took:?}: {stderr}", reader.name);
        assert!(!output.status.success(), "{} served a linearizable read without a quorum", reader.name);
        assert!(stderr.contains("needs the leader and a quorum"), "{}: {stderr}", reader.name);
        assert!(
            stderr.contains("a (") || stderr.contains("w ("),
            "{}: the error names no unreachable member: {stderr}",
            reader.name
        );
        // Bounded by the read timeout (5 s) plus the CLI's own start.
        assert!(took < Duration::from_secs(20), "{} took {took:?} to refuse", reader.name);

        // The local replica still answers.
        let local = reader.json(&["get", "notes", "kept"]);
        assert_eq!(local["document"]["document"]["v"].as_u64(), Some(1), "{}: {local}", reader.name);
    }
}
