//! Unreferenced blobs (issue 11 item 6): `tandem status` counts the blobs the configuration does not use,
//! `tandem blobs list` tells what references each, and `tandem blobs remove` deletes the ones nothing
//! references — on every member, files included — while refusing, with the reason and nothing removed, a
//! blob in use by the configuration or referenced by any event of the history. A pair with a witness, real
//! `tandem serve` processes, the real CLI and `curl`.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::Node;
use serde_json::Value;

/// Where a node keeps the file of blob `digest`, if it has one (`…/blobs/sha256/{digest}` under its data
/// directory).
fn blob_file(data_dir: &Path, digest: &str) -> Option<PathBuf> {
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == digest)
                && path.parent().and_then(Path::file_name).is_some_and(|n| n == "sha256")
            {
                return Some(path);
            }
        }
    }
    None
}

/// Uploads `bytes` with `POST /v1/blobs` and nothing else (no document references it); returns its digest.
fn upload_loose(node: &Node, file: &Path) -> String {
    let output = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("{}/v1/blobs", node.url()))
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&output.stdout).expect("the upload answers JSON");
    answer["digest"].as_str().expect("a digest").to_string()
}

fn usage<'a>(list: &'a Value, digest: &str) -> &'a Value {
    list["blobs"].as_array().unwrap().iter().find(|b| b["digest"] == digest).expect("the blob is listed")
}

/// Waits (bounded) until `check` holds for `node`'s blob file of `digest`.
fn wait_file(node: &Node, digest: &str, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while blob_file(&node.data_dir, digest).is_some() != present {
        assert!(
            Instant::now() < deadline,
            "{}: blob file {digest} present={} after 10 s",
            node.name,
            !present
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unreferenced_blobs_are_reported_and_removed_everywhere_and_referenced_ones_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, _w) = harness::pair_with_witness(root.path());
    let file = |name: &str, byte: u8, len: usize| {
        let path = root.path().join(name);
        std::fs::write(&path, vec![byte; len]).unwrap();
        path
    };
    let (loose_file, v1, v2) =
        (file("loose.bin", 1, 300_000), file("v1.img", 2, 200_000), file("v2.img", 3, 100_000));
    let loose = upload_loose(&a, &loose_file);
    a.ok(&["firmware", "add", "fw", v1.to_str().unwrap(), "--version", "1"]);
    a.ok(&["firmware", "add", "fw", v2.to_str().unwrap(), "--version", "2"]);
    // b applies what a committed a moment later: read there once it has.
    let revision = a.status()["revision"].clone();
    b.wait_status("b at a's revision", Duration::from_secs(10), |s| s["revision"] == revision);
    let list = b.json(&["blobs", "list"]);
    let (old, current) = {
        let digest_of = |size: u64| {
            list["blobs"].as_array().unwrap().iter().find(|b| b["size"] == size).unwrap()["digest"]
                .as_str()
                .unwrap()
                .to_string()
        };
        (digest_of(200_000), digest_of(100_000))
    };
    assert_eq!(usage(&list, &loose)["removable"], true);
    assert_eq!(usage(&list, &current)["in_use_by"], serde_json::json!(["firmware/fw"]));
    assert_eq!(usage(&list, &old)["history_references"], 1);
    assert_eq!(usage(&list, &old)["removable"], false);
    assert_eq!((list["removable"].as_u64(), list["removable_bytes"].as_u64()), (Some(1), Some(300_000)));

    // Status: two blobs the configuration does not use (the loose one and the old image).
    let status = b.status();
    assert_eq!(status["blobs"]["count"], 3, "{:#}", status["blobs"]);
    assert_eq!(status["blobs"]["unreferenced"], 2);
    assert_eq!(status["blobs"]["unreferenced_bytes"], 300_000 + 200_000);
    let text = b.ok(&["status"]);
    assert!(text.contains("2 not used by the configuration"), "{text}");

    // Refused, with the reason, nothing removed: in use, and in the history.
    for (digest, why) in
        [(&current, "in use by firmware/fw"), (&old, "referenced by 1 event(s) of the history")]
    {
        let output = a.cli(&["blobs", "remove", digest, "--yes"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(why) && stderr.contains("nothing was removed"), "{stderr}");
    }
    // The API refuses too, even when asked directly (the check is the replicated command's).
    let direct = Command::new("curl")
        .args(["-s", "-X", "DELETE", "-w", "\n%{http_code}"])
        .arg(format!("{}/v1/blobs/{old}", b.url()))
        .output()
        .unwrap();
    let direct = String::from_utf8_lossy(&direct.stdout).into_owned();
    assert!(
        direct.ends_with("\n409") && direct.contains("blob_in_use") && direct.contains("history"),
        "{direct}"
    );

    // Without a terminal and without --yes: nothing happens.
    let unconfirmed = a.cli(&["blobs", "remove", "--all-removable"]);
    assert_eq!(unconfirmed.status.code(), Some(1));
    for node in [&a, &b] {
        assert!(blob_file(&node.data_dir, &loose).is_some(), "{}: the loose blob is still there", node.name);
    }

    // Removed everywhere: the record on every member, the files on both data nodes.
    let removed = b.json(&["blobs", "remove", "--all-removable", "--yes"]);
    assert_eq!(removed["removed"], serde_json::json!([loose.clone()]), "{removed:#}");
    for node in [&a, &b] {
        wait_file(node, &loose, false);
        for kept in [&old, &current] {
            assert!(blob_file(&node.data_dir, kept).is_some(), "{}: blob {kept} must stay", node.name);
        }
        let list = node.json(&["blobs", "list"]);
        assert_eq!(list["blobs"].as_array().unwrap().len(), 2, "{}: {list:#}", node.name);
        assert_eq!(node.status()["blobs"]["unreferenced"], 1);
    }
    // The boot server still serves the firmware in use.
    let fetched = a.ok(&["blobs", "list", "--removable"]);
    assert!(!fetched.contains(&loose), "{fetched}");
    let data = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{size_download}"])
        .arg(format!("{}/v1/blobs/{current}/data", a.url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&data.stdout), "100000");
}
