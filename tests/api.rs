//! The admin API and metrics of a real single node, through curl and the CLI: bad input gets a clear JSON
//! error and changes nothing; metrics are in Prometheus text format with the figures an operator needs.

mod harness;

use std::process::Command;

use harness::Node;
use serde_json::Value;

/// curl: returns (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data");
    node.start(false);
    node.ok(&["put", "notes", "n1", "{\"a\":1}"]);
    let base = node.url();

    let cases: Vec<(Vec<String>, u16, &str)> = vec![
        (
            vec![
                "-X".into(),
                "PUT".into(),
                "--data".into(),
                "{not json".into(),
                format!("{base}/v1/docs/notes/n2"),
            ],
            400,
            "bad_request",
        ),
        (
            vec![
                "-X".into(),
                "PUT".into(),
                "--data".into(),
                "{\"mac\": 7}".into(),
                format!("{base}/v1/docs/terminals/t1"),
            ],
            422,
            "rejected",
        ),
        (
            vec![
                "-X".into(),
                "PUT".into(),
                "--data".into(),
                "{}".into(),
                format!("{base}/v1/docs/Bad%20Name/x"),
            ],
            422,
            "rejected",
        ),
        (
            vec!["-X".into(), "DELETE".into(), format!("{base}/v1/docs/notes/missing")],
            404,
            "no_such_document",
        ),
        (
            vec![
                "-X".into(),
                "PUT".into(),
                "--data".into(),
                "{}".into(),
                format!("{base}/v1/docs/notes/n1?if_mod_revision=99"),
            ],
            412,
            "precondition_failed",
        ),
        (
            vec![
                "-X".into(),
                "PUT".into(),
                "--data".into(),
                "{}".into(),
                format!("{base}/v1/docs/notes/n1?if_mod_revision=abc"),
            ],
            400,
            "bad_request",
        ),
        (
            vec![
                "-X".into(),
                "POST".into(),
                "--data".into(),
                "{\"operations\": 5}".into(),
                format!("{base}/v1/changes"),
            ],
            400,
            "bad_request",
        ),
        (
            vec![
                "-X".into(),
                "POST".into(),
                "--data".into(),
                "{\"operations\": [], \"extra\": 1}".into(),
                format!("{base}/v1/changes"),
            ],
            400,
            "bad_request",
        ),
        (
            vec![
                "-X".into(),
                "POST".into(),
                "--data".into(),
                "{\"operations\": []}".into(),
                format!("{base}/v1/changes"),
            ],
            422,
            "rejected",
        ),
        (vec![format!("{base}/v1/nothing-here")], 404, "not_found"),
        (vec![format!("{base}/v1/docs/notes/n1?consistency=sometimes")], 400, "bad_request"),
        // Names no document could have are refused, not answered with an empty list.
        (vec![format!("{base}/v1/docs/%C2%84")], 400, "bad_request"),
        (vec![format!("{base}/v1/docs/Notes/n1")], 400, "bad_request"),
        (vec![format!("{base}/v1/docs/notes/.hidden")], 400, "bad_request"),
        // Unknown fields inside an operation are refused.
        (
            vec![
                "-X".into(),
                "POST".into(),
                "--data".into(),
                r#"{"operations": [{"delete": {"collection": "notes", "id": "n1", "extra": 1}}]}"#.into(),
                format!("{base}/v1/changes"),
            ],
            400,
            "bad_request",
        ),
        (vec!["-X".into(), "PATCH".into(), format!("{base}/v1/docs/notes/n1")], 405, "method_not_allowed"),
    ];
    for (args, status, code) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got, body) = curl(&args);
        assert_eq!(got, status, "{args:?}: {body}");
        let error: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{args:?}: not JSON: {body}"));
        assert_eq!(error["code"], code, "{args:?}: {body}");
        assert!(!error["message"].as_str().unwrap_or("").is_empty());
    }

    // A body over the limit is refused without being read whole.
    let big = root.path().join("big.json");
    let mut text = String::from("{\"t\":\"");
    text.push_str(&"x".repeat(9 * 1024 * 1024));
    text.push_str("\"}");
    std::fs::write(&big, text).unwrap();
    let (status, body) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("{base}/v1/docs/notes/big"),
    ]);
    assert_eq!(status, 413, "{body}");

    // 405 says which methods the path allows.
    let output = Command::new("curl")
        .args(["-sS", "-i", "-X", "PATCH", &format!("{base}/v1/docs/notes/n1")])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&output.stdout).to_lowercase();
    assert!(head.contains("allow: get, put, delete"), "{head}");

    // An empty request id is no request id: two different puts with one both apply.
    for (id, value) in [("e1", "1"), ("e2", "2")] {
        let (status, body) = curl(&[
            "-X",
            "PUT",
            "--data",
            &format!("{{\"v\": {value}}}"),
            &format!("{base}/v1/docs/notes/{id}?request_id="),
        ]);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("accepted"), "{body}");
    }
    node.ok(&["delete", "notes", "e1"]);
    node.ok(&["delete", "notes", "e2"]);
    let events = node.history().len();
    assert_eq!(events, 5);

    // Nothing else changed: n1 untouched.
    assert_eq!(node.json(&["get", "notes", "n1"])["document"]["document"]["a"], 1);
    // Every response says which revision it reflects.
    let output =
        Command::new("curl").args(["-sS", "-i", &format!("{base}/v1/docs/notes/n1")]).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).to_lowercase().contains("x-tandem-revision: 5"));
    // A CLI usage error exits 2, an unreachable server 3.
    assert_eq!(node.cli(&["put", "notes", "x", "{oops"]).status.code(), Some(2));
    assert_eq!(harness::cli("http://127.0.0.1:9", &["status"]).status.code(), Some(3));
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn metrics_are_prometheus_text_with_raft_and_store_figures() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data");
    node.start(false);
    for i in 0..3 {
        node.ok(&["put", "notes", &format!("n{i}"), "{}"]);
    }
    assert!(!node.cli(&["put", "terminals", "t1", "{\"mac\": \"nope\"}"]).status.success());
    let (status, text) = curl(&[&format!("{}/metrics", node.url())]);
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "tandem_raft_has_leader"), Some(1.0));
    assert_eq!(metric(&text, "tandem_raft_is_leader"), Some(1.0));
    assert_eq!(metric(&text, "tandem_store_revision"), Some(3.0));
    assert!(metric(&text, "tandem_raft_term").unwrap() >= 1.0);
    assert!(metric(&text, "tandem_raft_last_log_index").unwrap() >= 4.0);
    assert_eq!(metric(&text, "tandem_raft_applied_index"), metric(&text, "tandem_raft_last_log_index"));
    assert!(metric(&text, "tandem_raft_leader_changes_total").unwrap() >= 1.0);
    assert_eq!(metric(&text, "tandem_proposals_total{result=\"committed\"}"), Some(3.0));
    assert_eq!(metric(&text, "tandem_proposals_total{result=\"rejected\"}"), Some(1.0));
    assert!(metric(&text, "tandem_apply_duration_seconds_count").unwrap() >= 3.0, "{text}");
    assert!(metric(&text, "tandem_fsync_duration_seconds_count").unwrap() >= 3.0, "{text}");
    for line in text.lines().filter(|l| !l.is_empty()) {
        assert!(line.starts_with('#') || line.starts_with("tandem_"), "unexpected line {line}");
    }
}
