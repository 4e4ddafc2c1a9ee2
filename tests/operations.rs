//! History operations end to end, on real `tandem serve` processes through the CLI and curl: export at a
//! revision, diff, revert and undo as new events, import into an independent node, previews that change
//! nothing, refusal without confirmation, and bad input answered with a clear JSON error and no write.

mod harness;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use harness::Node;
use serde_json::{Value, json};

/// curl: returns (HTTP status, body as JSON, or the text as a JSON string).
fn curl(args: &[&str]) -> (u16, Value) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (status.trim().parse().unwrap_or(0), value)
}

fn post(node: &Node, path: &str, body: &str) -> (u16, Value) {
    curl(&["-X", "POST", "--data-binary", body, &format!("{}{path}", node.url())])
}

fn revision(node: &Node) -> u64 {
    node.status()["revision"].as_u64().expect("status has a revision")
}

fn collections(node: &Node, at: Option<u64>) -> Value {
    let export = match at {
        Some(at) => node.json(&["export", "--at", &at.to_string()]),
        None => node.json(&["export"]),
    };
    export["collections"].clone()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes change set number `i` (1-based) and records its effect in `model`: mostly puts over a few notes
/// and terminal servers, every tenth a deletion.
fn write_change_set(node: &Node, i: u64, model: &mut BTreeMap<(String, String), Value>) {
    let (collection, id) = if i.is_multiple_of(5) {
        ("terminal_servers".to_string(), format!("ts{}", i % 3))
    } else {
        ("notes".to_string(), format!("n{}", i % 7))
    };
    let key = (collection.clone(), id.clone());
    if i.is_multiple_of(10) && model.contains_key(&key) {
        node.ok(&["delete", &collection, &id, "--reason", &format!("change {i}")]);
        model.remove(&key);
        return;
    }
    let document = if collection == "terminal_servers" {
        json!({"address": format!("10.0.0.{i}"), "port": 3389})
    } else {
        json!({"i": i, "settings": {"tag": format!("t{i}"), "keep": true}})
    };
    node.ok(&["put", &collection, &id, &document.to_string(), "--reason", &format!("change {i}")]);
    model.insert(key, document);
}

#[test]
fn revert_and_undo_are_new_events_and_previews_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data");
    node.start(false);
    let mut model = BTreeMap::new();
    for i in 1..=50 {
        write_change_set(&node, i, &mut model);
    }
    assert_eq!(revision(&node), 50);
    let at_ten = collections(&node, Some(10));
    assert_ne!(at_ten, collections(&node, None));

    // The diff names what differs, with a field-level summary for changed documents.
    let diff = node.json(&["diff", "10", "50"]);
    let kinds: Vec<&str> =
        diff["changes"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"changed"), "{diff:#}");
    let table = node.ok(&["diff", "10", "50"]);
    assert!(table.contains("~i ~settings.tag"), "{table}");
    assert!(node.ok(&["diff", "50", "50"]).contains("no differences"));

    // A dry run shows the change and writes nothing; without --yes and without a terminal, nothing happens.
    let preview = node.json(&["revert", "--to", "10", "--reason", "look first", "--dry-run"]);
    assert_eq!(preview["outcome"], "preview");
    assert_eq!(preview["revision"], 50);
    assert!(!preview["changes"].as_array().unwrap().is_empty());
    let refused = node.cli(&["revert", "--to", "10", "--reason", "no terminal"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("computed at revision 50"));
    assert_eq!(revision(&node), 50);
    assert_eq!(node.history().len(), 50);

    // The revert is one new event; the configuration is now the one at revision 10.
    let applied = node.json(&["revert", "--to", "10", "--reason", "back to ten", "--yes"]);
    assert_eq!(applied["outcome"], "accepted");
    assert_eq!(applied["revision"], 51);
    assert_eq!(collections(&node, None), at_ten);
    let history = node.history();
    assert_eq!(history.len(), 51);
    let revisions: Vec<u64> = history.iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert_eq!(revisions, (1..=51).collect::<Vec<_>>());
    assert_eq!(history[50]["actor"], "local");
    assert_eq!(history[50]["reason"], "back to ten");
    assert_eq!(history[49]["reason"], "change 50", "history is not rewritten");
    // Reverting to the state it is already in changes nothing and records nothing.
    let again = node.json(&["revert", "--to", "10", "--reason", "twice", "--yes"]);
    assert_eq!(again["outcome"], "unchanged");
    assert_eq!(node.history().len(), 51);

    // Undo restores exactly the state before the change set, as a new event.
    node.ok(&["put", "notes", "u", "{\"v\": 1}", "--reason", "first"]);
    node.ok(&["put", "notes", "u", "{\"v\": 2}", "--reason", "second"]);
    node.ok(&["put", "notes", "fresh", "{}", "--reason", "third"]);
    let before_third = collections(&node, Some(53));
    let undone = node.json(&["undo", "54", "--reason", "undo third", "--yes"]);
    assert_eq!((undone["outcome"].as_str(), undone["revision"].as_u64()), (Some("accepted"), Some(55)));
    assert_eq!(collections(&node, None), before_third);
    let undone = node.json(&["undo", "53", "--reason", "undo second", "--yes"]);
    assert_eq!(undone["revision"], 56);
    assert_eq!(node.json(&["get", "notes", "u"])["document"]["document"], json!({"v": 1}));
    assert_eq!(node.history().last().unwrap()["reason"], "undo second");

    // Undo of a change set whose document changed again later is refused, naming both.
    let refused = node.cli(&["undo", "52", "--reason", "too late", "--yes"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(message.contains("notes/u at revision 56"), "{message}");
    assert!(message.contains("tandem revert --to 51"), "{message}");
    assert_eq!(revision(&node), 56);
}

#[test]
fn an_export_imported_into_an_independent_node_makes_the_configurations_equal() {
    let root = tempfile::tempdir().unwrap();
    let mut source = Node::new(root.path(), "source", "data");
    let mut target = Node::new(root.path(), "target", "data");
    source.start(false);
    target.start(false);
    let image = root.path().join("fw.bin");
    std::fs::write(&image, b"firmware image bytes".repeat(1000)).unwrap();
    source.ok(&["firmware", "add", "fw1", image.to_str().unwrap(), "--version", "1.0"]);
    for i in 0..5 {
        source.ok(&["put", "notes", &format!("n{i}"), &format!("{{\"i\": {i}}}")]);
    }
    source.ok(&["put", "notes", "n1", "{\"i\": \"changed\"}"]);
    target.ok(&["put", "notes", "n0", "{\"i\": 0}"]);
    target.ok(&["put", "notes", "n1", "{\"i\": 1}"]);
    target.ok(&["put", "local", "only-here", "true"]);
    let file = root.path().join("export.json");
    let file = file.to_str().unwrap();
    source.ok(&["export", "--out", file]);
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(exported["blobs"].as_object().unwrap().len(), 1);

    // The firmware's blob is missing on the target: the preview lists it, the import is refused.
    let preview = target.json(&["import", file, "--reason", "copy", "--dry-run"]);
    assert_eq!(preview["missing_blobs"].as_array().unwrap().len(), 1, "{preview:#}");
    let refused = target.cli(&["import", file, "--reason", "copy", "--yes"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("missing"), "{}", stderr(&refused));
    let body = json!({"export": exported, "reason": "copy"}).to_string();
    let (status, answer) = post(&target, "/v1/import", &body);
    assert_eq!((status, answer["code"].as_str()), (422, Some("missing_blobs")), "{answer}");
    assert_eq!(revision(&target), 3);

    // Once the blob is uploaded, the import applies as one event and the configurations are equal.
    let (status, _) = curl(&[
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", image.display()),
        &format!("{}/v1/blobs", target.url()),
    ]);
    assert_eq!(status, 200);
    let preview = target.json(&["import", file, "--reason", "copy", "--dry-run"]);
    let kinds: BTreeMap<String, String> = preview["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                format!("{}/{}", c["collection"].as_str().unwrap(), c["id"].as_str().unwrap()),
                c["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kinds["local/only-here"], "deleted");
    assert_eq!(kinds["notes/n1"], "changed");
    assert_eq!(kinds["firmware/fw1"], "created");
    assert!(!kinds.contains_key("notes/n0"), "unchanged documents are not rewritten");
    let applied = target.json(&["import", file, "--reason", "copy from source", "--yes"]);
    assert_eq!(applied["revision"], 4);
    assert_eq!(collections(&target, None), collections(&source, None));
    assert_eq!(target.json(&["export"])["blobs"], exported["blobs"]);
    assert_eq!(target.history().last().unwrap()["reason"], "copy from source");
    // A second import changes nothing.
    let again = target.json(&["import", file, "--reason", "again", "--yes"]);
    assert_eq!(again["outcome"], "unchanged");
    assert_eq!(revision(&target), 4);
}

#[test]
fn bad_input_gets_a_clear_json_error_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data");
    node.start(false);
    node.ok(&["put", "notes", "n1", "{\"a\": 1}"]);
    node.ok(&["put", "notes", "n1", "{\"a\": 2}"]);
    let base = node.url();
    let export = |collections: Value| json!({"revision": 1, "cluster_id": "x", "collections": collections});
    let import = |collections: Value| json!({"export": export(collections), "reason": "r"}).to_string();

    let posts: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/revert", "{not json".into(), 400, "bad_request"),
        ("/v1/revert", r#"{"to": "one", "reason": "r"}"#.into(), 400, "bad_request"),
        ("/v1/revert", r#"{"to": 1, "reason": "r", "extra": true}"#.into(), 400, "bad_request"),
        ("/v1/revert", r#"{"to": 1}"#.into(), 400, "bad_request"),
        ("/v1/revert", r#"{"to": 1, "reason": "  "}"#.into(), 400, "bad_request"),
        ("/v1/revert", r#"{"to": 0, "reason": "r"}"#.into(), 400, "bad_request"),
        ("/v1/revert", r#"{"to": 99, "reason": "r"}"#.into(), 404, "no_such_revision"),
        ("/v1/revert", r#"{"to": 1, "reason": "r", "if_revision": 1}"#.into(), 412, "precondition_failed"),
        ("/v1/undo", "[]".into(), 400, "bad_request"),
        ("/v1/undo", r#"{"revision": -2, "reason": "r"}"#.into(), 400, "bad_request"),
        ("/v1/undo", r#"{"revision": 0, "reason": "r"}"#.into(), 400, "bad_request"),
        ("/v1/undo", r#"{"revision": 99, "reason": "r"}"#.into(), 404, "no_such_revision"),
        ("/v1/undo", r#"{"revision": 1, "reason": "r"}"#.into(), 409, "changed_later"),
        ("/v1/import", r#"{"export": [], "reason": "r"}"#.into(), 400, "bad_request"),
        ("/v1/import", r#"{"reason": "r"}"#.into(), 400, "bad_request"),
        ("/v1/import", json!({"export": export(json!({})), "reason": ""}).to_string(), 400, "bad_request"),
        (
            "/v1/import",
            json!({"export": {"revision": 1, "cluster_id": "x", "collections": {}, "extra": 1}, "reason": "r"})
                .to_string(),
            400,
            "bad_request",
        ),
        ("/v1/import", import(json!({"notes": ["not", "a", "map"]})), 400, "bad_request"),
        ("/v1/import", import(json!({"Bad Name": {"x": 1}})), 422, "rejected"),
        ("/v1/import", import(json!({"notes": {"bad id!": 1}})), 422, "rejected"),
        ("/v1/import", import(json!({"terminals": {"t1": {"model": "x"}}})), 422, "rejected"),
        (
            "/v1/import",
            json!({"export": {"revision": 1, "cluster_id": "x", "collections": {}, "blobs": {"nope": 1}},
                   "reason": "r"})
            .to_string(),
            400,
            "bad_request",
        ),
    ];
    for (path, body, status, code) in &posts {
        let (got, answer) = post(&node, path, body);
        assert_eq!(got, *status, "POST {path} {body}: {answer}");
        assert_eq!(answer["code"], *code, "POST {path} {body}: {answer}");
        assert!(!answer["message"].as_str().unwrap_or("").is_empty(), "{answer}");
        // A dry run meets the same checks (the malformed bodies aside: they have nowhere to say it).
        if let Ok(mut value) = serde_json::from_str::<Value>(body)
            && value.is_object()
            && *status != 412
        {
            value["dry_run"] = json!(true);
            let (got, answer) = post(&node, path, &value.to_string());
            assert_eq!(got, *status, "dry run of POST {path} {body}: {answer}");
        }
    }
    let gets: Vec<(String, u16, &str)> = vec![
        (format!("{base}/v1/export?at=99"), 404, "no_such_revision"),
        (format!("{base}/v1/export?at=two"), 400, "bad_request"),
        (format!("{base}/v1/export?revision=1"), 400, "bad_request"),
        (format!("{base}/v1/diff?from=1"), 400, "bad_request"),
        (format!("{base}/v1/diff?from=1&to=99"), 404, "no_such_revision"),
    ];
    for (url, status, code) in &gets {
        let (got, answer) = curl(&[url]);
        assert_eq!((got, answer["code"].as_str()), (*status, Some(*code)), "GET {url}: {answer}");
    }

    // Oversized bodies are refused before they are read whole.
    let big_revert = format!(r#"{{"to": 1, "reason": "{}"}}"#, "x".repeat(100 * 1024));
    assert_eq!(post(&node, "/v1/revert", &big_revert).0, 413);
    let big = root.path().join("big.json");
    let padding = "x".repeat(33 * 1024 * 1024);
    std::fs::write(&big, format!(r#"{{"export": {}, "reason": "{padding}"}}"#, export(json!({})))).unwrap();
    let (status, answer) =
        curl(&["-X", "POST", "--data-binary", &format!("@{}", big.display()), &format!("{base}/v1/import")]);
    assert_eq!((status, answer["code"].as_str()), (413, Some("too_large")), "{answer}");

    // A free-form collection the store does not know is configuration like any other.
    let (status, answer) = post(&node, "/v1/import", &{
        let mut body: Value =
            serde_json::from_str(&import(json!({"gadgets": {"g1": {"any": "thing"}}}))).unwrap();
        body["dry_run"] = json!(true);
        body.to_string()
    });
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["changes"].as_array().unwrap().len(),
        2,
        "gadgets/g1 created, notes/n1 deleted: {answer}"
    );

    // CLI usage errors exit 2, an unreadable file 1.
    let not_json = root.path().join("not.json");
    std::fs::write(&not_json, "{oops").unwrap();
    assert_eq!(
        node.cli(&["import", not_json.to_str().unwrap(), "--reason", "r", "--yes"]).status.code(),
        Some(2)
    );
    assert_eq!(node.cli(&["import", "/nonexistent/export.json", "--reason", "r"]).status.code(), Some(1));
    assert_eq!(node.cli(&["undo", "1"]).status.code(), Some(2), "--reason is required");
    assert_eq!(
        node.cli(&["revert", "--to", "1", "--reason", "r", "--yes", "--dry-run"]).status.code(),
        Some(2)
    );
    assert_eq!(node.cli(&["export", "--at", "99"]).status.code(), Some(1));

    // Nothing was written by any of it.
    assert_eq!(revision(&node), 2);
    assert_eq!(node.history().len(), 2);
    assert_eq!(node.json(&["get", "notes", "n1"])["document"]["document"], json!({"a": 2}));
}

#[test]
fn revert_and_undo_work_through_either_node_of_a_pair() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, _w) = harness::pair_with_witness(root.path());
    for i in 1..=5 {
        a.ok(&["put", "notes", &format!("n{}", i % 2), &format!("{{\"i\": {i}}}"), "--reason", "setup"]);
    }
    let at_two = collections(&a, Some(2));
    for (via, other) in [(&a, &b), (&b, &a)] {
        let start = revision(via);
        let applied = via.json(&["revert", "--to", "2", "--reason", "via either", "--yes"]);
        assert!(matches!(applied["outcome"].as_str(), Some("accepted" | "unchanged")), "{applied:#}");
        let put = via.json(&["put", "notes", "extra", &format!("{{\"from\": \"{}\"}}", via.name)]);
        let put = put["revision"].as_u64().unwrap();
        assert!(put > start);
        let undone = via.json(&["undo", &put.to_string(), "--reason", "undo extra", "--yes"]);
        assert_eq!(undone["outcome"], "accepted", "{undone:#}");
        let expected = undone["revision"].as_u64().unwrap();
        other.wait_status("catch up", Duration::from_secs(10), |s| s["revision"].as_u64() >= Some(expected));
        assert_eq!(revision(via), expected, "the node that was asked has applied its own change");
        assert_eq!(collections(via, None), at_two);
        assert_eq!(collections(other, None), at_two);
    }
}
