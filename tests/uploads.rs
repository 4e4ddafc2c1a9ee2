//! Blob uploads that never finish leave nothing behind (issue 11 item 6): an upload whose client disconnects is
//! aborted at once, and one orphaned by a crash is aborted by the leader once it has made no progress for
//! `[limits.api] abandoned_upload_after`. Real `tandem serve` processes on 127.0.0.1, raw HTTP over TCP.

mod harness;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::Node;

const MIB: usize = 1024 * 1024;

fn uploads_in_progress(node: &Node) -> u64 {
    node.status()["uploads_in_progress"].as_u64().expect("status reports uploads_in_progress")
}

/// Waits (bounded) until the node reports `want` uploads in progress; returns how long it took.
fn wait_uploads(node: &Node, want: u64, timeout: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if uploads_in_progress(node) == want {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{}: {} uploads in progress after {timeout:?}, expected {want}",
        node.name,
        uploads_in_progress(node)
    );
}

/// Starts a `POST /v1/blobs` announcing 8 MiB and sends the first 3 MiB; returns the open connection.
fn start_upload(node: &Node) -> TcpStream {
    let mut stream = TcpStream::connect(&node.api).unwrap();
    write!(stream, "POST /v1/blobs HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n", node.api, 8 * MIB)
        .unwrap();
    let piece = vec![0x5au8; MIB];
    for _ in 0..3 {
        stream.write_all(&piece).unwrap();
    }
    stream.flush().unwrap();
    stream
}

#[test]
fn an_upload_whose_client_disconnects_is_aborted_at_once() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data");
    node.start(false);
    let stream = start_upload(&node);
    wait_uploads(&node, 1, Duration::from_secs(20));
    drop(stream);
    let took = wait_uploads(&node, 0, Duration::from_secs(10));
    eprintln!("the interrupted upload was aborted {took:?} after the disconnect");
    assert!(node.log_text().contains("aborted an interrupted blob upload"), "{}", node.log_text());
    // The node still takes uploads.
    let file = root.path().join("small.bin");
    std::fs::write(&file, vec![7u8; 300_000]).unwrap();
    node.ok(&["firmware", "add", "fw", file.to_str().unwrap(), "--version", "1"]);
    assert_eq!(uploads_in_progress(&node), 0);
}

#[test]
fn an_upload_orphaned_by_a_crash_is_aborted_by_the_leader_after_the_limit() {
    let root = tempfile::tempdir().unwrap();
    let mut node =
        Node::new(root.path(), "a", "data").with_config("[limits.api]\nabandoned_upload_after = \"3s\"\n");
    node.start(false);
    let stream = start_upload(&node);
    wait_uploads(&node, 1, Duration::from_secs(20));
    // The node dies mid-upload: nothing of it runs the handler's abort.
    node.kill();
    drop(stream);
    node.start(false);
    assert_eq!(uploads_in_progress(&node), 1, "the restarted node forgot the upload in progress");
    let took = wait_uploads(&node, 0, Duration::from_secs(30));
    eprintln!("the orphaned upload was aborted {took:?} after the restart (limit 3 s)");
    assert!(took >= Duration::from_secs(2), "aborted after {took:?}, before the 3 s limit");
    assert!(node.log_text().contains("made no progress within the limit"), "{}", node.log_text());
}
