//! Bearer tokens end to end: every route of the admin API refuses a missing or unknown token (401) and a token
//! whose role is too weak (403) without changing anything, and the actor recorded in history is the token's
//! name. Requests are sent with the real `curl`.

mod harness;

use std::process::Command;

use harness::Node;
use serde_json::Value;
use tandem::auth::Access;
use tandem::node::api::ROUTES;

const ADMIN: &str = "admin-secret-0123456789";
const OPERATOR: &str = "operator-secret-0123456";
const READER: &str = "reader-secret-012345678";

fn config() -> String {
    format!(
        r#"
[[tokens]]
name = "ada"
role = "admin"
secret = "{ADMIN}"

[[tokens]]
name = "ops"
role = "operator"
secret = "{OPERATOR}"

[[tokens]]
name = "eve"
role = "reader"
secret = "{READER}"
"#
    )
}

/// A concrete path for a route pattern (placeholders filled with harmless values).
pub fn sample_path(pattern: &str) -> String {
    let path = pattern
        .replace("{collection}", "notes")
        .replace("{id}", "auth-test")
        .replace("{sha256}", &"0".repeat(64))
        .replace("{name}", "no-such-server");
    match path.as_str() {
        "/console/no-such-server" => "/console/console.js".into(),
        "/v1/diff" => "/v1/diff?from=1&to=1".into(),
        "/v1/watch" => "/v1/watch?from=1".into(),
        _ => path,
    }
}

/// `curl` a route; returns the HTTP status and the JSON error code, if the body is one.
fn request(node: &Node, method: &str, path: &str, token: Option<&str>) -> (u16, Option<String>) {
    let mut command = Command::new("curl");
    command.args(["-s", "-S", "--max-time", "3", "-X", method, "-w", "\n%{http_code}"]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if method == "POST" || method == "PUT" {
        command.args(["-H", "Content-Type: application/json", "--data", "{}"]);
    }
    let output = command.arg(format!("http://{}{path}", node.api)).output().expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = serde_json::from_str::<Value>(body).ok().and_then(|v| v["code"].as_str().map(str::to_string));
    (status.trim().parse().unwrap_or(0), code)
}

#[test]
fn every_route_refuses_missing_and_weak_tokens_and_the_actor_is_the_token_name() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data").with_config(&config()).with_token(ADMIN);
    node.start(false);
    node.ok(&["put", "notes", "n1", r#"{"text": "before"}"#, "--reason", "seed"]);
    let revision = node.status()["revision"].as_u64().unwrap();

    for route in ROUTES {
        let path = sample_path(route.pattern);
        if route.access == Access::Public {
            assert_eq!(request(&node, route.method, &path, None).0, 200, "{} {path}", route.method);
            continue;
        }
        for token in [None, Some("not-a-token-at-all-0000")] {
            let (status, code) = request(&node, route.method, &path, token);
            assert_eq!(
                (status, code.as_deref()),
                (401, Some("unauthorized")),
                "{} {path} {token:?}",
                route.method
            );
        }
        if route.access >= Access::Operate {
            let (status, code) = request(&node, route.method, &path, Some(READER));
            assert_eq!(
                (status, code.as_deref()),
                (403, Some("forbidden")),
                "{} {path} as reader",
                route.method
            );
        }
        if route.access == Access::Admin {
            let (status, code) = request(&node, route.method, &path, Some(OPERATOR));
            assert_eq!(
                (status, code.as_deref()),
                (403, Some("forbidden")),
                "{} {path} as operator",
                route.method
            );
        }
    }
    assert_eq!(node.status()["revision"].as_u64().unwrap(), revision, "a refused request changed something");

    // The CLI: a reader may read but not write; the operator's writes are recorded under its name.
    let reader = harness::cli_with_token(&node.url(), READER, &["put", "notes", "n2", "{}"]);
    assert_eq!(reader.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&reader.stderr).contains("reader"), "{reader:?}");
    assert!(harness::cli_with_token(&node.url(), READER, &["get", "notes", "n1"]).status.success());
    let anonymous = harness::cli(&node.url(), &["get", "notes", "n1"]);
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("token"), "{anonymous:?}");
    let operator =
        harness::cli_with_token(&node.url(), OPERATOR, &["put", "notes", "n2", "{}", "--reason", "x"]);
    assert!(operator.status.success(), "{operator:?}");
    let history = node.history();
    let last = history.last().unwrap();
    assert_eq!(last["actor"], "ops");
    assert_eq!(history[0]["actor"], "ada");

    // Revert and undo record the token's name too; a reader may not even preview them (403 before planning).
    let undo = last["revision"].as_u64().unwrap().to_string();
    let refused =
        harness::cli_with_token(&node.url(), READER, &["undo", &undo, "--reason", "r", "--dry-run"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let undone =
        harness::cli_with_token(&node.url(), OPERATOR, &["undo", &undo, "--reason", "oops", "--yes"]);
    assert!(undone.status.success(), "{undone:?}");
    let reverted =
        harness::cli_with_token(&node.url(), ADMIN, &["revert", "--to", "2", "--reason", "back", "--yes"]);
    assert!(reverted.status.success(), "{reverted:?}");
    let actors: Vec<Value> = node.history().iter().rev().take(2).map(|e| e["actor"].clone()).collect();
    assert_eq!(actors, vec![Value::from("ada"), Value::from("ops")]);
}

#[test]
fn a_node_without_tokens_is_open_on_loopback_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data");
    node.start(false);
    node.ok(&["put", "notes", "n1", "{}"]);
    assert_eq!(node.history()[0]["actor"], tandem::auth::OPEN_ACTOR);
    assert!(node.log_text().contains("no API tokens configured"), "{}", node.log_text());
}

#[test]
fn every_listed_route_reaches_a_handler() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data").with_config(&config()).with_token(ADMIN);
    node.start(false);
    node.ok(&["put", "notes", "auth-test", "{}"]);
    for route in ROUTES {
        let path = sample_path(route.pattern);
        let (status, code) = request(&node, route.method, &path, Some(ADMIN));
        assert!(status != 0, "{} {path}: no answer", route.method);
        assert_ne!(code.as_deref(), Some("unrouted"), "{} {path} has no handler", route.method);
        assert_ne!(status, 501, "{} {path} is not implemented", route.method);
        assert!(status < 500, "{} {path} answered {status} {code:?}", route.method);
    }
    let output = Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {READER}")])
        .arg(format!("http://{}/v1/openapi.json", node.api))
        .output()
        .unwrap();
    let document: Value = serde_json::from_slice(&output.stdout).expect("the OpenAPI document is JSON");
    let patterns: std::collections::BTreeSet<_> = ROUTES.iter().map(|r| r.pattern).collect();
    assert_eq!(document["paths"].as_object().unwrap().len(), patterns.len());
}

/// `tandem token new` makes a token whose config entry holds only the secret's digest; a node configured
/// with it accepts the secret (and records the token's name), refuses anything else, and `tandem token hash`
/// gives the same digest for the secret.
#[test]
fn a_token_made_by_token_new_works_with_only_its_digest_in_the_config() {
    use std::io::Write;
    use std::process::Stdio;

    let made = Command::new(harness::tandem_bin())
        .args(["token", "new", "line-7", "--role", "operator", "--json"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let made: Value = serde_json::from_slice(&made.stdout).unwrap();
    let (secret, digest) = (made["secret"].as_str().unwrap(), made["secret_sha256"].as_str().unwrap());
    assert_eq!((secret.len(), digest.len()), (64, 64));
    assert_eq!(made["role"], "operator");

    let text = Command::new(harness::tandem_bin())
        .args(["token", "new", "line-7", "--role", "operator"])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("[[tokens]]\nname = \"line-7\"\nrole = \"operator\"\nsecret_sha256 = \""),
        "{text}"
    );
    assert!(!text.contains(secret), "each token gets its own secret");

    let mut hash = Command::new(harness::tandem_bin())
        .args(["token", "hash", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    hash.stdin.take().unwrap().write_all(format!("{secret}\n").as_bytes()).unwrap();
    let hashed = hash.wait_with_output().unwrap();
    assert!(hashed.status.success(), "{hashed:?}");
    let hashed: Value = serde_json::from_slice(&hashed.stdout).unwrap();
    assert_eq!(hashed["secret_sha256"], digest);

    let config = format!(
        "[[tokens]]\nname = \"line-7\"\nrole = \"operator\"\nsecret_sha256 = \"{digest}\"\n\n\
         [[tokens]]\nname = \"eve\"\nrole = \"reader\"\nsecret = \"{READER}\"\n"
    );
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data").with_config(&config).with_token(secret);
    node.start(false);
    node.ok(&["put", "notes", "n1", "{}"]);
    assert_eq!(node.history()[0]["actor"], "line-7");
    // The digest itself is not a secret that opens anything.
    assert_eq!(request(&node, "PUT", "/v1/docs/notes/n2", Some(digest)).0, 401);
    assert_eq!(request(&node, "PUT", "/v1/docs/notes/n2", Some(READER)).0, 403);
    assert_eq!(node.history().len(), 1);
}

/// A config whose token is malformed keeps the node from starting, with a message naming the token.
#[test]
fn a_malformed_token_entry_stops_the_node_with_a_clear_message() {
    let root = tempfile::tempdir().unwrap();
    let config_path = root.path().join("bad.toml");
    std::fs::write(
        &config_path,
        "[[tokens]]\nname = \"ops\"\nrole = \"operator\"\nsecret_sha256 = \"not-hex\"\n",
    )
    .unwrap();
    let output = Command::new(harness::tandem_bin())
        .args(["serve", "--config"])
        .arg(&config_path)
        .args(["--data-dir"])
        .arg(root.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("secret_sha256 of token 'ops' must be 64 hex digits"), "{stderr}");
}
