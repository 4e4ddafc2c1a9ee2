//! End-to-end tests of `GET /v1/watch` and `tandem watch`: real nodes, the real CLI, and `curl` as a raw
//! HTTP client. Each test checks the one promise of a watch: every revision, in order, once — across
//! reconnects, failovers and a watcher that is cut off for being too slow.

mod harness;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::Node;
use serde_json::{Value, json};

/// Lines of a child's stdout, read on a thread so that every wait can be bounded.
struct Lines {
    receiver: mpsc::Receiver<String>,
}

impl Lines {
    fn of(stdout: ChildStdout) -> Lines {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { receiver }
    }

    /// The next line, or a panic naming `what` after `timeout`.
    fn next(&self, what: &str, timeout: Duration) -> String {
        self.receiver
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("{what}: no line within {timeout:?} ({e})"))
    }

    /// The next line that is not a heartbeat, parsed.
    fn next_event(&self, what: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value: Value = serde_json::from_str(&self.next(what, left)).unwrap();
            if value["heartbeat"] != true {
                return value;
            }
        }
    }

    /// The next SSE block (lines up to a blank one).
    fn next_block(&self, what: &str, timeout: Duration) -> Vec<String> {
        let mut block = Vec::new();
        loop {
            let line = self.next(what, timeout);
            let line = line.trim_end_matches('\r').to_string();
            if line.is_empty() {
                if block.is_empty() {
                    continue;
                }
                return block;
            }
            block.push(line);
        }
    }

    /// Skips the response head that `curl -i` prints; returns its lines.
    fn head(&self) -> Vec<String> {
        let mut head = Vec::new();
        loop {
            let line = self.next("the response head", Duration::from_secs(10));
            let line = line.trim_end_matches('\r').to_string();
            if line.is_empty() {
                return head;
            }
            head.push(line.to_ascii_lowercase());
        }
    }
}

/// `curl -N` streaming `url`, stdout piped; `-i` prints the response head first.
fn curl_stream(url: &str, headers: &[&str]) -> Child {
    let mut command = Command::new("curl");
    command.args(["-s", "-S", "-N", "-i", "--max-time", "120"]);
    for header in headers {
        command.args(["-H", header]);
    }
    command.arg(url).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("run curl")
}

/// `curl` a request with an optional JSON body file; the status and the parsed body.
fn curl(method: &str, url: &str, headers: &[&str], body_file: Option<&std::path::Path>) -> (u16, Value) {
    let mut command = Command::new("curl");
    command.args(["-s", "-S", "--max-time", "60", "-X", method, "-w", "\n%{http_code}"]);
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(file) = body_file {
        command
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", file.display()));
    }
    let output = command.arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn put(node: &Node, id: &str) -> u64 {
    let answer = node.json(&["put", "notes", id, &format!("{{\"id\": \"{id}\"}}")]);
    answer["revision"].as_u64().unwrap()
}

/// `tandem watch ARGS` against `servers`, stdout piped.
fn watch_child(servers: &str, args: &[&str]) -> Child {
    Command::new(harness::tandem_bin())
        .args(["--server", servers, "watch"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem watch")
}

/// Waits (bounded) for a child to exit; its exit code and stderr.
fn wait_exit(child: &mut Child, timeout: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            return (status.code(), stderr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the child did not exit within {timeout:?}");
}

#[test]
fn watch_from_one_replays_the_history_in_order_then_follows_new_writes() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data").with_env("TANDEM_WATCH_HEARTBEAT_MS", "300");
    node.start(false);
    let revisions: Vec<u64> = (1..=30).map(|i| put(&node, &format!("n{i}"))).collect();
    assert_eq!(revisions, (1..=30).collect::<Vec<u64>>());

    // The CLI: the whole history from 1, then live writes, then exit at --limit.
    let mut child = watch_child(&node.url(), &["--json", "--from", "1", "--limit", "35"]);
    let lines = Lines::of(child.stdout.take().unwrap());
    for expected in 1..=30u64 {
        let event: Value = serde_json::from_str(&lines.next("the backlog", Duration::from_secs(20))).unwrap();
        assert_eq!(event["revision"], expected);
        assert_eq!(event["changes"][0]["id"], format!("n{expected}"));
        assert_eq!(event["changes"][0]["document"]["id"], format!("n{expected}"));
    }
    for i in 31..=35u64 {
        assert_eq!(put(&node, &format!("n{i}")), i);
        let event: Value =
            serde_json::from_str(&lines.next("a live event", Duration::from_secs(20))).unwrap();
        assert_eq!(event["revision"], i);
        assert_eq!(event["changes"][0]["id"], format!("n{i}"));
    }
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");

    // Human output: one line per event, revision first.
    let human = node.ok(&["watch", "--from", "29", "--limit", "2"]);
    let rows: Vec<&str> = human.lines().collect();
    assert_eq!(rows.len(), 2, "{human}");
    assert!(rows[0].trim_start().starts_with("29 ") && rows[0].contains("~notes/n29"), "{human}");
    assert!(rows[1].trim_start().starts_with("30 ") && rows[1].contains("~notes/n30"), "{human}");

    // Raw NDJSON without `from`: a heartbeat naming the current revision, then only new events; heartbeats
    // keep coming while nothing happens.
    let mut curl = curl_stream(&format!("{}/v1/watch", node.url()), &[]);
    let lines = Lines::of(curl.stdout.take().unwrap());
    let head = lines.head();
    assert!(head[0].contains(" 200"), "{head:?}");
    assert!(head.contains(&"content-type: application/x-ndjson".to_string()), "{head:?}");
    let first: Value =
        serde_json::from_str(&lines.next("the first heartbeat", Duration::from_secs(10))).unwrap();
    assert_eq!(first, json!({"heartbeat": true, "revision": 35}));
    assert_eq!(put(&node, "n36"), 36);
    let event = lines.next_event("the new event", Duration::from_secs(10));
    assert_eq!((event["revision"].as_u64(), event["changes"][0]["id"].as_str()), (Some(36), Some("n36")));
    let heartbeat: Value = serde_json::from_str(&lines.next("a heartbeat", Duration::from_secs(10))).unwrap();
    assert_eq!(heartbeat, json!({"heartbeat": true, "revision": 36}));
    let _ = curl.kill();
    let _ = curl.wait();

    // A filtered watch sends only matching events, and its heartbeats say how far it has looked.
    node.ok(&["put", "racks", "r1", "{}"]);
    put(&node, "n38");
    let mut curl = curl_stream(&format!("{}/v1/watch?from=30&collection=racks", node.url()), &[]);
    let lines = Lines::of(curl.stdout.take().unwrap());
    lines.head();
    let event = lines.next_event("the filtered event", Duration::from_secs(10));
    assert_eq!((event["revision"].as_u64(), event["changes"][0]["id"].as_str()), (Some(37), Some("r1")));
    let heartbeat = loop {
        let value: Value = serde_json::from_str(&lines.next("a heartbeat", Duration::from_secs(10))).unwrap();
        assert_eq!(value["heartbeat"], true, "a filtered watch sent {value}");
        if value["revision"] == 38 {
            break value;
        }
    };
    assert_eq!(heartbeat["revision"], 38);
    let _ = curl.kill();
    let _ = curl.wait();
}

#[test]
fn sse_streams_resume_after_the_last_event_id() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data");
    node.start(false);
    for i in 1..=12 {
        put(&node, &format!("n{i}"));
    }
    // A reconnecting EventSource sends its original URL plus Last-Event-ID: the header wins.
    let mut curl = curl_stream(
        &format!("{}/v1/watch?from=1", node.url()),
        &["Accept: text/event-stream", "Last-Event-ID: 10"],
    );
    let lines = Lines::of(curl.stdout.take().unwrap());
    let head = lines.head();
    assert!(head.contains(&"content-type: text/event-stream".to_string()), "{head:?}");
    assert_eq!(lines.next_block("the opening comment", Duration::from_secs(10)), vec![": heartbeat 10"]);
    let check_event = |revision: u64| {
        let block = lines.next_block("an event", Duration::from_secs(10));
        assert_eq!(block.len(), 3, "{block:?}");
        assert_eq!(block[0], format!("id: {revision}"));
        assert_eq!(block[1], "event: change");
        let data: Value = serde_json::from_str(block[2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["revision"], revision);
        assert_eq!(data["changes"][0]["id"], format!("n{revision}"));
    };
    check_event(11);
    check_event(12);
    put(&node, "n13");
    check_event(13);
    let _ = curl.kill();
    let _ = curl.wait();

    // format=sse without the Accept header, from a revision.
    let mut curl = curl_stream(&format!("{}/v1/watch?format=sse&from=12", node.url()), &[]);
    let lines = Lines::of(curl.stdout.take().unwrap());
    lines.head();
    assert_eq!(lines.next_block("the opening comment", Duration::from_secs(10)), vec![": heartbeat 11"]);
    assert_eq!(lines.next_block("event 12", Duration::from_secs(10))[0], "id: 12");
    assert_eq!(lines.next_block("event 13", Duration::from_secs(10))[0], "id: 13");

    // An open watch does not hold up the node's shutdown: the stream ends and the node exits by itself.
    assert!(node.stop(), "the node did not exit with a watch open:\n{}", node.log_text());
    let (code, _) = wait_exit(&mut curl, Duration::from_secs(10));
    assert!(code.is_some(), "curl was killed by a signal");
    assert!(lines.receiver.recv_timeout(Duration::from_secs(5)).is_err(), "the stream went on");
}

#[test]
fn a_mirror_streams_the_primarys_history() {
    let root = tempfile::tempdir().unwrap();
    let (primary, mirror) = harness::primary_with_mirror(root.path(), "p", "m");
    for i in 1..=5 {
        put(&primary, &format!("n{i}"));
    }
    let mut child = watch_child(&mirror.url(), &["--json", "--from", "1", "--limit", "6"]);
    let lines = Lines::of(child.stdout.take().unwrap());
    let mut seen: Vec<Value> = (0..5)
        .map(|_| serde_json::from_str(&lines.next("the mirror's backlog", Duration::from_secs(20))).unwrap())
        .collect();
    put(&primary, "n6");
    seen.push(
        serde_json::from_str(&lines.next("a live event on the mirror", Duration::from_secs(20))).unwrap(),
    );
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(seen, primary.history());
}

fn leader_name(node: &Node) -> Option<String> {
    node.status()["leader_name"].as_str().map(str::to_string)
}

/// Writes `notes/id` through `node` with a request id (a retry applies once), retrying (bounded) while the
/// cluster fails over.
fn put_retrying(node: &Node, id: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let output = node.cli(&["put", "notes", id, "{}", "--request-id", &format!("req-{id}"), "--json"]);
        if output.status.success() {
            let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
            return answer["revision"].as_u64().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("writing {id} through {} never succeeded", node.name);
}

#[test]
fn a_watch_survives_a_leader_failover_without_gap_or_duplicate() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, mut b, _w) = harness::pair_with_witness(root.path());
    let leader = leader_name(&a).expect("a leader");
    let (leader, follower) = if leader == "a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    for i in 1..=10 {
        put_retrying(leader, &format!("before{i}"));
    }
    // The leader first: the watch reads from it until it dies, then resumes on the follower.
    const TOTAL: u64 = 30;
    let servers = format!("{},{}", leader.url(), follower.url());
    let mut child = watch_child(&servers, &["--json", "--from", "1", "--limit", &TOTAL.to_string()]);
    let lines = Lines::of(child.stdout.take().unwrap());
    let mut seen: Vec<Value> = Vec::new();
    for _ in 0..10 {
        seen.push(
            serde_json::from_str(&lines.next("events before the failover", Duration::from_secs(20))).unwrap(),
        );
    }
    leader.kill();
    for i in 1..=20 {
        put_retrying(follower, &format!("after{i}"));
    }
    while (seen.len() as u64) < TOTAL {
        seen.push(
            serde_json::from_str(&lines.next("events after the failover", Duration::from_secs(90))).unwrap(),
        );
    }
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&leader.api), "the watch never lost its first server: {stderr}");

    let revisions: Vec<u64> = seen.iter().map(|event| event["revision"].as_u64().unwrap()).collect();
    assert_eq!(revisions, (1..=TOTAL).collect::<Vec<u64>>(), "{stderr}");
    // And they are the survivor's events, exactly.
    let history = follower.history();
    assert_eq!(&seen[..], &history[..TOTAL as usize]);
}

#[test]
fn a_slow_watcher_is_cut_off_with_the_revision_to_resume_from() {
    // A queue of two frames fills at once.
    slow_watcher_is_cut_off("2");
}

#[test]
fn a_slow_watcher_of_big_events_is_cut_off_by_the_byte_bound() {
    // A queue of 1000 frames would hold every event: only the byte bound (16 MiB) can cut this one off.
    slow_watcher_is_cut_off("1000");
}

/// A watcher that stops reading a history of big events is cut off with the revision to resume from, and
/// resuming there delivers exactly the rest. `buffer`: the node's `TANDEM_WATCH_BUFFER`.
fn slow_watcher_is_cut_off(buffer: &str) {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data")
        .with_env("TANDEM_WATCH_BUFFER", buffer)
        .with_env("TANDEM_WATCH_SLOW_MS", "1000");
    node.start(false);
    // 12 events of ~4 MB: far more than the socket buffers and the queue hold for a reader that stops.
    const EVENTS: u64 = 12;
    let filler = "x".repeat(40 * 1024);
    for i in 1..=EVENTS {
        let operations: Vec<Value> = (0..100)
            .map(|j| {
                let id = format!("e{i}-{j}");
                json!({"put": {"collection": "texts", "id": id, "document": {"text": filler}}})
            })
            .collect();
        let file = root.path().join("change.json");
        std::fs::write(&file, json!({"reason": "big", "operations": operations}).to_string()).unwrap();
        let (status, answer) = curl("POST", &format!("{}/v1/changes", node.url()), &[], Some(&file));
        assert_eq!((status, answer["revision"].as_u64()), (200, Some(i)), "{answer}");
    }

    // A reader that reads nothing: curl blocks once its stdout pipe is full, and stops reading the socket.
    let mut curl = curl_stream(&format!("{}/v1/watch?from=1", node.url()), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.log_text().contains("the watcher is too slow") {
        assert!(Instant::now() < deadline, "the slow watcher was not cut off:\n{}", node.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Now read it all: the events queued before the cut, then the error naming the first one not delivered.
    let lines = Lines::of(curl.stdout.take().unwrap());
    lines.head();
    let mut next = 1u64;
    let error = loop {
        let value: Value =
            serde_json::from_str(&lines.next("the cut-off stream", Duration::from_secs(30))).unwrap();
        if value["heartbeat"] == true {
            continue;
        }
        if value.get("error").is_some() {
            break value;
        }
        assert_eq!(value["revision"], next);
        next += 1;
    };
    assert_eq!(error["error"]["code"], "too_slow", "{error}");
    assert_eq!(error["resume_from"], next, "{error}");
    assert_eq!(error["error"]["hint"], format!("resume with from={next}"), "{error}");
    assert!(next <= EVENTS, "every event was delivered before the cut: {error}");
    let (code, _) = wait_exit(&mut curl, Duration::from_secs(10));
    assert_eq!(code, Some(0), "the stream did not end after the error");

    // Resuming from the named revision delivers exactly the rest.
    let mut child = watch_child(
        &node.url(),
        &["--json", "--from", &next.to_string(), "--limit", &(EVENTS - next + 1).to_string()],
    );
    let lines = Lines::of(child.stdout.take().unwrap());
    for expected in next..=EVENTS {
        let event: Value = serde_json::from_str(&lines.next("the rest", Duration::from_secs(30))).unwrap();
        assert_eq!(event["revision"], expected);
    }
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn bad_watch_parameters_are_refused_with_a_json_error() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data");
    node.start(false);
    let base = format!("{}/v1/watch", node.url());
    for (query, header) in [
        ("?from=abc", None),
        ("?from=0", None),
        ("?from=-3", None),
        ("?format=xml", None),
        ("?collection=", None),
        ("?form=1", None),
        ("?from=1&from=2", None),
        ("", Some("Last-Event-ID: yesterday")),
    ] {
        let headers: Vec<&str> = header.into_iter().collect();
        let (status, body) = curl("GET", &format!("{base}{query}"), &headers, None);
        assert_eq!(status, 400, "{query} {header:?}: {body}");
        assert_eq!(body["code"], "bad_request", "{query}: {body}");
        assert!(!body["message"].as_str().unwrap_or("").is_empty(), "{query}: {body}");
    }

    // The CLI: usage errors exit 2, a server that never answers exits 3 after the bounded retries.
    assert_eq!(node.cli(&["watch", "--from", "0"]).status.code(), Some(2));
    assert_eq!(node.cli(&["watch", "--collection", ""]).status.code(), Some(2));
    let nobody = format!("http://127.0.0.1:{}", harness::free_port());
    let output = harness::cli(&nobody, &["watch", "--from", "1", "--retries", "2"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no server answered"), "{output:?}");
}

#[test]
fn a_witness_refuses_a_watch_and_the_cli_moves_on_to_a_data_node() {
    let root = tempfile::tempdir().unwrap();
    let (a, _b, witness) = harness::pair_with_witness(root.path());
    const TOTAL: u64 = 6;
    const LIMIT: u64 = 5;
    for i in 1..=TOTAL {
        assert_eq!(put_retrying(&a, &format!("n{i}")), i);
    }

    // The witness serves no history: 403 with the JSON error code "witness" and a hint where to ask.
    let (status, body) = curl("GET", &format!("{}/v1/watch?from=1", witness.url()), &[], None);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "witness", "{body}");
    assert!(body["hint"].as_str().is_some_and(|hint| hint.contains("data node")), "{body}");

    // A witness alone: the CLI retries (bounded) and gives up with exit code 3, naming the witness.
    let output = harness::cli(&witness.url(), &["watch", "--from", "1", "--retries", "2"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("witness") && said.contains(&witness.api), "{said}");

    // The witness first in the list: the CLI moves on to the data node and prints 1..=LIMIT, then exits.
    let servers = format!("{},{}", witness.url(), a.url());
    let mut child = watch_child(&servers, &["--limit", &LIMIT.to_string(), "--from", "1", "--json"]);
    let lines = Lines::of(child.stdout.take().unwrap());
    let seen: Vec<Value> = (0..LIMIT)
        .map(|_| {
            serde_json::from_str(&lines.next("events from the data node", Duration::from_secs(20))).unwrap()
        })
        .collect();
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&witness.api) && stderr.contains("witness"), "{stderr}");
    let revisions: Vec<u64> = seen.iter().map(|event| event["revision"].as_u64().unwrap()).collect();
    assert_eq!(revisions, (1..=LIMIT).collect::<Vec<u64>>());
    assert_eq!(&seen[..], &a.history()[..LIMIT as usize]);
    assert!(lines.receiver.recv_timeout(Duration::from_secs(1)).is_err(), "more than --limit events");
}

/// The status a watch request gets (the stream itself is abandoned after 2 s).
fn watch_status(url: &str) -> u16 {
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "2", "-w", "%{http_code}"])
        .arg(url)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn a_node_serves_a_bounded_number_of_watchers_and_frees_a_slot_when_one_leaves() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data").with_env("TANDEM_WATCH_MAX", "2");
    node.start(false);
    put(&node, "n1");
    let url = format!("{}/v1/watch?from=1", node.url());
    // Two streams, each connected (its response head read) before the next starts: both hold a slot.
    let mut first = curl_stream(&url, &[]);
    let first_lines = Lines::of(first.stdout.take().unwrap());
    assert!(first_lines.head()[0].contains("200"));
    let mut second = curl_stream(&url, &[]);
    let second_lines = Lines::of(second.stdout.take().unwrap());
    assert!(second_lines.head()[0].contains("200"));
    // A third watcher is refused.
    assert_eq!(watch_status(&url), 503);
    let (status, body) = curl("GET", &url.replace("from=1", "from=1&format=ndjson"), &[], None);
    assert_eq!((status, body["code"].as_str()), (503, Some("too_many_watchers")), "{body}");
    assert!(body["hint"].as_str().unwrap_or("").contains("another node"), "{body}");
    // Other endpoints are not affected.
    assert!(node.cli(&["status"]).status.success());

    // One watcher leaves: its slot is free again.
    first.kill().unwrap();
    first.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut admitted = false;
    while Instant::now() < deadline {
        if watch_status(&url) == 200 {
            admitted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(admitted, "the slot of a watcher that left was not given back");
    second.kill().unwrap();
    second.wait().unwrap();
}
