//! End-to-end sync between two independent installations (two single nodes, two clusters): the preview lists
//! exactly what will change and writes nothing, `--yes` makes the destination's configuration equal to the
//! source's in one event and copies the firmware blob, node-local data and `cluster_events` stay where they
//! are, and a destination that moved between preview and apply is refused with nothing written. Also the blob
//! data endpoint sync streams from: exact bytes, 404 and 400.

mod harness;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::Node;
use serde_json::{Value, json};

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| ((i ^ seed).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn sha256_file(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or("").to_string()
}

/// `curl` a JSON request; returns the status and the JSON answer.
fn request(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let mut command = Command::new("curl");
    command.args(["-sS", "-X", method, "-w", "\n%{http_code}", url]);
    if body.is_some() {
        command.args(["-H", "content-type: application/json", "--data-binary", "@-"]);
    }
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(body) = body {
        stdin.write_all(body.to_string().as_bytes()).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (answer, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), serde_json::from_str(answer).unwrap_or(Value::Null))
}

fn export(node: &Node) -> Value {
    let (status, answer) = request("GET", &format!("{}/v1/export", node.url()), None);
    assert_eq!(status, 200, "export of {}: {answer}", node.name);
    answer
}

fn revision(node: &Node) -> u64 {
    node.status()["revision"].as_u64().unwrap()
}

/// Uploads firmware `name` from `bytes` with `tandem firmware add`; returns its digest.
fn add_firmware(node: &Node, root: &Path, name: &str, bytes: &[u8]) -> String {
    let file = root.join(format!("{}-{name}.bin", node.name));
    std::fs::write(&file, bytes).unwrap();
    let answer = node.json(&["firmware", "add", name, file.to_str().unwrap(), "--version", "7"]);
    answer["digest"].as_str().unwrap().to_string()
}

fn sync(source: &Node, destination: &Node, extra: &[&str]) -> Output {
    let mut command = Command::new(harness::tandem_bin());
    command.args(["sync", "--from", &source.url(), "--to", &destination.url()]).args(extra);
    command.stdin(Stdio::null()).output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn sync_previews_copies_blobs_and_applies_as_one_event() {
    let root = tempfile::tempdir().unwrap();
    let mut source = Node::new(root.path(), "src", "data");
    let mut destination = Node::new(root.path(), "dst", "data");
    source.start(false);
    destination.start(false);

    // The source: a firmware with a real blob, terminals using it, TermCap and a free-form collection.
    let firmware = pattern(1_500_000, 1);
    let digest = add_firmware(&source, root.path(), "fw1", &firmware);
    source.ok(&["put", "terminal_servers", "ts1", r#"{"address":"10.0.0.5","port":3389}"#]);
    let t1 = r#"{"mac":"02:00:00:00:00:01","firmware":"fw1","terminal_servers":["ts1"]}"#;
    source.ok(&["put", "terminals", "t1", t1]);
    source.ok(&["put", "terminals", "t2", r#"{"mac":"02:00:00:00:00:02"}"#]);
    source.ok(&["put", "termcap", "hp", r#"{"cols":80}"#]);
    source.ok(&["put", "lines", "l1", r#"{"name":"press"}"#]);
    // A forced recovery writes the source's own `cluster_events` record: never to be synced.
    assert!(source.stop());
    let recovered = harness::cli(
        "http://unused",
        &[
            "recover",
            "--data-dir",
            source.data_dir.to_str().unwrap(),
            "--force-standalone",
            "--reason",
            "drill",
        ],
    );
    assert!(recovered.status.success(), "{}", text(&recovered));
    source.start(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while source.cli(&["list", "cluster_events"]).status.code() != Some(0)
        || !source.ok(&["list", "cluster_events"]).contains("epoch-")
    {
        assert!(Instant::now() < deadline, "the recovery was not recorded:\n{}", source.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A terminal boots from the source: its heartbeat is node-local.
    let booted = Command::new(harness::tandem_bin())
        .args(["boot", "--servers", &source.boot, "--mac", "02:00:00:00:00:01", "--timeout", "2", "--out"])
        .arg(root.path().join("boot-out"))
        .output()
        .unwrap();
    assert!(booted.status.success(), "{}", text(&booted));
    source.wait_status("heartbeat", Duration::from_secs(5), |s| s["terminals"]["online"] == 1);

    // The destination: some documents the same, some different, some only here, another firmware.
    let old_digest = add_firmware(&destination, root.path(), "fw0", &pattern(300_000, 2));
    destination.ok(&["put", "terminal_servers", "ts1", r#"{"address":"10.0.0.5","port":3389}"#]);
    destination.ok(&["put", "terminals", "t2", r#"{"mac":"02:00:00:00:00:22"}"#]);
    destination.ok(&["put", "terminals", "t9", r#"{"mac":"02:00:00:00:00:09"}"#]);
    destination.ok(&["put", "termcap", "old", r#"{"cols":40}"#]);
    destination.ok(&["put", "lines", "l1", r#"{"name":"press"}"#]);
    destination.ok(&["put", "lines", "l2", r#"{"name":"paint"}"#]);
    let before = revision(&destination);
    let events_before = destination.history().len();

    // Preview: without --yes and without a terminal, it lists the differences, refuses, and writes nothing.
    let preview = sync(&source, &destination, &["--json"]);
    assert_eq!(preview.status.code(), Some(1), "{}", text(&preview));
    assert!(String::from_utf8_lossy(&preview.stderr).contains("--yes"), "{}", text(&preview));
    let plan: Value = serde_json::from_slice(&preview.stdout).expect("the preview is JSON");
    assert_eq!(plan["outcome"], "preview");
    assert_eq!(
        plan["collections"],
        json!({
            "firmware": {"created": ["fw1"], "changed": [], "deleted": ["fw0"]},
            "lines": {"created": [], "changed": [], "deleted": ["l2"]},
            "termcap": {"created": ["hp"], "changed": [], "deleted": ["old"]},
            "terminals": {"created": ["t1"], "changed": ["t2"], "deleted": ["t9"]},
        }),
        "{plan:#}"
    );
    assert_eq!(plan["missing_blobs"], json!([{"digest": digest, "size": firmware.len()}]));
    assert_eq!(plan["destination"]["revision"], before);
    assert_eq!(plan["source"]["url"], source.url());
    assert_eq!(revision(&destination), before, "the preview wrote nothing");
    assert_eq!(request("GET", &format!("{}/v1/blobs/{digest}", destination.url()), None).0, 404);
    // The same preview for people.
    let human = sync(&source, &destination, &[]);
    assert_eq!(human.status.code(), Some(1));
    let said = String::from_utf8_lossy(&human.stdout);
    assert!(said.contains("1 created, 1 changed, 1 deleted") && said.contains("  ~ t2"), "{said}");
    assert!(said.contains(&digest) && said.contains("1.4 MiB"), "{said}");

    // An unreachable side is exit 3 and named.
    let nowhere = format!("http://127.0.0.1:{}", harness::free_port());
    let output = harness::cli(&destination.url(), &["sync", "--from", &nowhere, "--to", &destination.url()]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(text(&output).contains(&nowhere), "{}", text(&output));

    // Apply.
    let applied = sync(&source, &destination, &["--yes", "--json"]);
    assert!(applied.status.success(), "{}", text(&applied));
    let report: Value = serde_json::from_slice(&applied.stdout).expect("the report is JSON");
    assert_eq!(report["outcome"], "applied");
    assert_eq!(report["new_revision"], before + 1, "{report:#}");
    assert_eq!(report["blobs_copied"], json!({"count": 1, "bytes": firmware.len()}));
    assert_eq!(report["collections"], plan["collections"]);
    assert_eq!(report["totals"], json!({"created": 3, "changed": 1, "deleted": 4}));
    assert_eq!(export(&destination)["collections"], export(&source)["collections"]);
    let (status, blob) = request("GET", &format!("{}/v1/blobs/{digest}", destination.url()), None);
    assert_eq!((status, blob["size"].as_u64()), (200, Some(firmware.len() as u64)));
    let copy = root.path().join("copied.bin");
    let fetched = Command::new("curl")
        .args([
            "-sSf",
            "-o",
            copy.to_str().unwrap(),
            &format!("{}/v1/blobs/{digest}/data", destination.url()),
        ])
        .output()
        .unwrap();
    assert!(fetched.status.success(), "{}", text(&fetched));
    assert_eq!(sha256_file(&copy), digest);
    // One new event, naming the source.
    let events = destination.history();
    assert_eq!(events.len(), events_before + 1);
    let event = events.iter().max_by_key(|e| e["revision"].as_u64()).unwrap();
    let reason = event["reason"].as_str().unwrap();
    assert!(reason.contains(&source.url()) && reason.contains("sync from"), "{event:#}");
    // Never copied: the source's cluster_events and its heartbeats.
    let events_here = destination.cli(&["list", "cluster_events"]);
    assert!(!String::from_utf8_lossy(&events_here.stdout).contains("epoch-"), "{}", text(&events_here));
    assert!(source.ok(&["list", "cluster_events"]).contains("epoch-"));
    let status = destination.status();
    assert_eq!(status["terminals"]["online"], 0, "{status:#}");
    assert_eq!(status["terminals"]["offline"], 2, "{status:#}");
    // The old firmware's document is gone; nothing references its blob now.
    assert!(!export(&destination)["blobs"].as_object().unwrap().contains_key(&old_digest));

    // Again: nothing to do, nothing written.
    let again = sync(&source, &destination, &["--json"]);
    assert!(again.status.success(), "{}", text(&again));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["outcome"], "unchanged");
    assert_eq!(again["collections"], json!({}));
    let human = sync(&source, &destination, &[]);
    assert!(human.status.success() && String::from_utf8_lossy(&human.stdout).contains("No difference"));
    assert_eq!(revision(&destination), before + 1);

    // The API refuses an import computed at an old revision (412) and writes nothing.
    source.ok(&["put", "lines", "l3", r#"{"name":"pack"}"#]);
    let (status, answer) = request(
        "POST",
        &format!("{}/v1/import", destination.url()),
        Some(&json!({"export": export(&source), "reason": "stale", "dry_run": false, "if_revision": before})),
    );
    assert_eq!(status, 412, "{answer}");
    assert_eq!(answer["code"], "precondition_failed");
    assert_eq!(revision(&destination), before + 1);

    // The same through the CLI: somebody writes to the destination between preview and apply (the hidden
    // hold hook of src/sync.rs pauses sync right before the apply).
    let hold = root.path().join("hold");
    let mut racing = Command::new(harness::tandem_bin())
        .args(["sync", "--from", &source.url(), "--to", &destination.url(), "--yes"])
        .env("TANDEM_SYNC_TEST_HOLD_FILE", &hold)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hold.exists() {
        if Instant::now() > deadline || racing.try_wait().unwrap().is_some() {
            let _ = racing.kill();
            panic!("sync did not reach the apply: {}", text(&racing.wait_with_output().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    destination.ok(&["put", "notes", "late", "{}"]);
    std::fs::remove_file(&hold).unwrap();
    let raced = racing.wait_with_output().unwrap();
    assert_eq!(raced.status.code(), Some(1), "{}", text(&raced));
    let said = text(&raced);
    assert!(
        said.contains(&format!(
            "the destination changed since the preview (revision {} → {})",
            before + 1,
            before + 2
        )) && said.contains("nothing was written; run sync again"),
        "{said}"
    );
    assert_eq!(revision(&destination), before + 2, "only the racing write");
    assert_eq!(destination.cli(&["get", "lines", "l3"]).status.code(), Some(1));
}

#[test]
fn blob_data_streams_the_exact_bytes() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "solo", "data");
    node.start(false);
    let bytes = pattern(2_700_000, 7);
    let file = root.path().join("blob.bin");
    std::fs::write(&file, &bytes).unwrap();
    let upload = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("{}/v1/blobs", node.url()))
        .output()
        .unwrap();
    assert!(upload.status.success(), "{}", text(&upload));
    let digest =
        serde_json::from_slice::<Value>(&upload.stdout).unwrap()["digest"].as_str().unwrap().to_string();
    assert_eq!(digest, sha256_file(&file));

    let out = root.path().join("fetched.bin");
    let fetched = Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "-o",
            out.to_str().unwrap(),
            &format!("{}/v1/blobs/{digest}/data", node.url()),
        ])
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&fetched.stdout).to_lowercase();
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert!(headers.contains(&format!("content-length: {}", bytes.len())), "{headers}");
    assert!(headers.contains("content-type: application/octet-stream"), "{headers}");
    assert_eq!(sha256_file(&out), digest);
    assert_eq!(std::fs::read(&out).unwrap(), bytes);

    let unknown = "0".repeat(64);
    let (status, answer) = request("GET", &format!("{}/v1/blobs/{unknown}/data", node.url()), None);
    assert_eq!((status, answer["code"].as_str()), (404, Some("not_found")), "{answer}");
    let (status, answer) = request("GET", &format!("{}/v1/blobs/not-a-digest/data", node.url()), None);
    assert_eq!((status, answer["code"].as_str()), (400, Some("bad_request")), "{answer}");
    assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
}

/// Token secrets of the two installations: every one different, so a token of one side is unknown on the
/// other.
const SRC_READER: &str = "src-reader-secret-000000001";
const SRC_OPERATOR: &str = "src-operator-secret-0000002";
const DST_READER: &str = "dst-reader-secret-000000003";
const DST_OPERATOR: &str = "dst-operator-secret-0000004";

/// A node config with a reader token `{prefix}-reader` and an operator token `{prefix}-ops`.
fn tokens_config(prefix: &str, reader: &str, operator: &str) -> String {
    format!(
        "[[tokens]]\nname = \"{prefix}-reader\"\nrole = \"reader\"\nsecret = \"{reader}\"\n\n\
         [[tokens]]\nname = \"{prefix}-ops\"\nrole = \"operator\"\nsecret = \"{operator}\"\n"
    )
}

/// `tandem sync` with exactly these token variables in its environment (none inherited).
fn sync_with_env(source: &Node, destination: &Node, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(harness::tandem_bin());
    command.args(["sync", "--from", &source.url(), "--to", &destination.url()]).args(extra);
    for key in ["TANDEM_TOKEN", "TANDEM_FROM_TOKEN", "TANDEM_TO_TOKEN"] {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command.stdin(Stdio::null()).output().unwrap()
}

/// The HTTP status of `GET /v1/blobs/{digest}` on `node` with its token.
fn blob_status(node: &Node, digest: &str) -> u16 {
    let output = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "-H"])
        .arg(format!("Authorization: Bearer {}", node.token.as_deref().unwrap_or("")))
        .arg(format!("{}/v1/blobs/{digest}", node.url()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0)
}

/// The configuration `tandem export` prints (the node's own token).
fn collections_of(node: &Node) -> Value {
    let export: Value = serde_json::from_str(&node.ok(&["export"])).expect("the export is JSON");
    export["collections"].clone()
}

#[test]
fn sync_between_installations_with_tokens_uses_each_sides_own_token() {
    let root = tempfile::tempdir().unwrap();
    let mut source = Node::new(root.path(), "src", "data")
        .with_config(&tokens_config("src", SRC_READER, SRC_OPERATOR))
        .with_token(SRC_OPERATOR);
    let mut destination = Node::new(root.path(), "dst", "data")
        .with_config(&tokens_config("dst", DST_READER, DST_OPERATOR))
        .with_token(DST_OPERATOR);
    source.start(false);
    destination.start(false);
    // A firmware with a blob: the copy (GET .../data on the source, POST /v1/blobs on the destination)
    // carries the tokens too.
    let firmware = pattern(200_000, 3);
    let digest = add_firmware(&source, root.path(), "fw1", &firmware);
    source.ok(&["put", "terminals", "t1", r#"{"mac":"02:00:00:00:00:01","firmware":"fw1"}"#]);
    destination.ok(&["put", "notes", "only-here", "{}"]);
    let before = revision(&destination);
    let events_before = destination.history().len();
    let nothing_written = |what: &str| {
        assert_eq!(revision(&destination), before, "{what}: the destination changed");
        assert_eq!(blob_status(&destination, &digest), 404, "{what}: a blob was copied");
    };

    // A wrong source token (the destination's operator token, unknown on the source): 401, nothing written.
    let wrong_source = sync_with_env(
        &source,
        &destination,
        &["--yes", "--from-token", DST_OPERATOR, "--to-token", DST_OPERATOR],
        &[],
    );
    assert_eq!(wrong_source.status.code(), Some(1), "{}", text(&wrong_source));
    let said = text(&wrong_source);
    assert!(said.contains(&source.url()) && said.contains("401"), "{said}");
    nothing_written("a wrong source token");

    // A reader token for the destination: the preview (an import) is refused with 403, nothing written.
    let reader = sync_with_env(
        &source,
        &destination,
        &["--yes", "--from-token", SRC_READER, "--to-token", DST_READER],
        &[],
    );
    assert_eq!(reader.status.code(), Some(1), "{}", text(&reader));
    let said = text(&reader);
    assert!(said.contains(&destination.url()) && said.contains("403"), "{said}");
    assert!(said.contains("dst-reader") && said.contains("reader role"), "{said}");
    nothing_written("a reader token for the destination");
    // The same through the environment variables.
    let reader = sync_with_env(
        &source,
        &destination,
        &["--yes"],
        &[("TANDEM_FROM_TOKEN", SRC_READER), ("TANDEM_TO_TOKEN", DST_READER)],
    );
    assert_eq!(reader.status.code(), Some(1), "{}", text(&reader));
    assert!(text(&reader).contains("403"), "{}", text(&reader));
    nothing_written("a reader token for the destination (environment)");

    // A reader token of the source and an operator token of the destination, as flags: applied, as the
    // destination's operator.
    let applied = sync_with_env(
        &source,
        &destination,
        &["--yes", "--json", "--from-token", SRC_READER, "--to-token", DST_OPERATOR],
        &[],
    );
    assert!(applied.status.success(), "{}", text(&applied));
    let report: Value = serde_json::from_slice(&applied.stdout).expect("the report is JSON");
    assert_eq!(report["outcome"], "applied", "{report:#}");
    assert_eq!(report["new_revision"], before + 1, "{report:#}");
    assert_eq!(report["blobs_copied"], json!({"count": 1, "bytes": firmware.len()}));
    assert_eq!(collections_of(&destination), collections_of(&source));
    assert_eq!(blob_status(&destination, &digest), 200);
    let events = destination.history();
    assert_eq!(events.len(), events_before + 1, "one new event");
    let event = events.iter().max_by_key(|e| e["revision"].as_u64()).unwrap();
    assert_eq!(event["actor"], "dst-ops", "{event:#}");
    assert!(event["reason"].as_str().is_some_and(|r| r.contains("sync from")), "{event:#}");

    // The environment variables instead of the flags.
    source.ok(&["put", "lines", "l1", r#"{"name":"press"}"#]);
    let applied = sync_with_env(
        &source,
        &destination,
        &["--yes", "--json"],
        &[("TANDEM_FROM_TOKEN", SRC_READER), ("TANDEM_TO_TOKEN", DST_OPERATOR)],
    );
    assert!(applied.status.success(), "{}", text(&applied));
    let report: Value = serde_json::from_slice(&applied.stdout).expect("the report is JSON");
    assert_eq!(report["outcome"], "applied", "{report:#}");
    assert_eq!(report["new_revision"], before + 2, "{report:#}");
    assert_eq!(report["totals"], json!({"created": 1, "changed": 0, "deleted": 0}), "{report:#}");
    assert_eq!(collections_of(&destination), collections_of(&source));
    let events = destination.history();
    assert_eq!(events.len(), events_before + 2);
    let event = events.iter().max_by_key(|e| e["revision"].as_u64()).unwrap();
    assert_eq!(event["actor"], "dst-ops", "{event:#}");
    // The source was only read: its last writer is still its own operator.
    assert!(source.history().iter().all(|e| e["actor"] == "src-ops"));
}
