//! End-to-end boots: real `tandem serve` processes, the `tandem boot` client playing terminals over HTTP and
//! TFTP, curl comparing what two nodes serve, and the primary killed while 20 terminals boot.

mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::Node;
use serde_json::Value;

fn sha256_file(path: &std::path::Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or("").to_string()
}

/// Uploads `bytes` as firmware `fw1` and creates terminal `t{i}` for each MAC, through `node`.
fn provision(node: &Node, root: &std::path::Path, bytes: &[u8], macs: &[String]) -> String {
    let file = root.join("firmware.bin");
    std::fs::write(&file, bytes).unwrap();
    let upload = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{}/v1/blobs", node.api))
        .output()
        .unwrap();
    assert!(upload.status.success(), "{}", String::from_utf8_lossy(&upload.stdout));
    let digest =
        serde_json::from_slice::<Value>(&upload.stdout).unwrap()["digest"].as_str().unwrap().to_string();
    node.ok(&[
        "put",
        "firmware",
        "fw1",
        &format!("{{\"version\":\"7\",\"blob\":\"{digest}\",\"size\":{}}}", bytes.len()),
    ]);
    node.ok(&["put", "terminal_servers", "ts1", "{\"address\":\"10.9.8.7\",\"port\":3389}"]);
    for (i, mac) in macs.iter().enumerate() {
        let doc = format!("{{\"mac\":\"{mac}\",\"firmware\":\"fw1\",\"terminal_servers\":[\"ts1\"]}}");
        node.ok(&["put", "terminals", &format!("t{i}"), &doc]);
    }
    digest
}

fn boot(servers: &str, mac: &str, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(harness::tandem_bin())
        .args(["boot", "--servers", servers, "--mac", mac, "--timeout", "2", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn headers(url: &str) -> (String, String) {
    let output = Command::new("curl").args(["-sS", "-D", "-", "-o", "/dev/null", url]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_lowercase();
    let etag = text.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap_or("").trim().to_string();
    let revision =
        text.lines().find_map(|l| l.strip_prefix("x-tandem-revision: ")).unwrap_or("").trim().to_string();
    (etag, revision)
}

#[test]
fn terminals_boot_from_either_node_and_through_a_failover() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, mut b, w) = harness::pair_with_witness(root.path());
    let firmware: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let macs: Vec<String> = (0..20).map(|i| format!("02:00:00:00:01:{i:02x}")).collect();
    let digest = provision(&a, root.path(), &firmware, &macs);
    let revision = a.status()["revision"].as_u64().unwrap();
    b.wait_status("b applied", Duration::from_secs(10), |s| s["revision"] == revision);

    // Both data nodes serve the same bytes with the same ETag.
    for path in
        ["/boot/v1/config/02-00-00-00-01-00", "/boot/v1/firmware/fw1", &format!("/boot/v1/blobs/{digest}")]
    {
        let (etag_a, rev_a) = headers(&format!("http://{}{path}", a.boot));
        let (etag_b, rev_b) = headers(&format!("http://{}{path}", b.boot));
        assert!(!etag_a.is_empty(), "{path} has an ETag");
        assert_eq!(etag_a, etag_b, "{path}: same ETag on both nodes");
        assert_eq!(rev_a, rev_b);
    }
    // The witness serves no boots.
    assert!(
        Command::new("curl")
            .args(["-sf", &format!("http://{}/boot/v1/firmware/fw1", w.boot)])
            .output()
            .unwrap()
            .status
            .code()
            != Some(0)
    );

    // A terminal boots over HTTP, skipping "none" and a server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let out = root.path().join("http-boot");
    let started = Instant::now();
    let output = boot(&format!("0.0.0.0 {silent_addr} {} {}", b.boot, a.boot), &macs[0], &out, &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(started.elapsed() >= Duration::from_secs(2), "waited for the silent server's timeout");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains(&format!("booted from {}", b.boot)) && said.contains(&digest), "{said}");
    assert_eq!(sha256_file(&out.join("firmware-fw1")), digest);
    let config: Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["terminal_servers"][0]["address"], "10.9.8.7");
    // Heartbeats reached both data nodes.
    for node in [&a, &b] {
        node.wait_status("heartbeat", Duration::from_secs(5), |s| s["terminals"]["online"] == 1);
    }

    // Over TFTP.
    let out = root.path().join("tftp-boot");
    let http_port = b.boot.rsplit(':').next().unwrap();
    let output = boot(&b.tftp, &macs[1], &out, &["--protocol", "tftp", "--http-port", http_port]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(sha256_file(&out.join("firmware-fw1")), digest);

    // An unknown terminal gets a clear refusal.
    let output = boot(&a.boot, "02:00:00:00:09:99", &root.path().join("unknown"), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("404"));

    // 20 terminals boot at once while the primary is killed: every one ends with verified firmware.
    let leader = a.status()["leader_name"].as_str().unwrap().to_string();
    let (primary, secondary) = if leader == "a" { (&mut a, &b) } else { (&mut b, &a) };
    let servers = format!("{} {}", primary.boot, secondary.boot);
    let mut terminals = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        let out = root.path().join(format!("t{i}"));
        let child = Command::new(harness::tandem_bin())
            .args(["boot", "--servers", &servers, "--mac", mac, "--timeout", "3", "--out"])
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        terminals.push((out, child));
        if i == 5 {
            primary.kill();
        }
    }
    for (out, child) in terminals {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(sha256_file(&out.join("firmware-fw1")), digest);
    }
}

#[test]
fn a_mirror_keeps_booting_terminals_with_its_primary_down() {
    let root = tempfile::tempdir().unwrap();
    let (mut p, m) = harness::primary_with_mirror(root.path(), "p", "m");
    let macs = vec!["02:00:00:00:02:01".to_string()];
    let digest = provision(&p, root.path(), &[42u8; 70_000], &macs);
    let revision = p.status()["revision"].as_u64().unwrap();
    m.wait_status("mirror applied", Duration::from_secs(10), |s| s["revision"] == revision);
    p.kill();
    let out = root.path().join("boot");
    let output = boot(&format!("{} {}", p.boot, m.boot), &macs[0], &out, &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("booted from {}", m.boot)));
    assert_eq!(sha256_file(&out.join("firmware-fw1")), digest);
}

#[test]
fn firmware_add_uploads_files_and_writes_the_document_in_one_change() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::new(root.path(), "a", "data");
    a.start(false);
    let image = root.path().join("image.bin");
    let kernel = root.path().join("vmlinuz");
    let initrd = root.path().join("initrd.img");
    std::fs::write(&image, vec![7u8; 2_500_000]).unwrap();
    std::fs::write(&kernel, b"kernel bytes").unwrap();
    std::fs::write(&initrd, b"initrd bytes").unwrap();
    let answer = a.json(&[
        "firmware",
        "add",
        "thin-os",
        image.to_str().unwrap(),
        "--version",
        "9.1",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        "quiet splash",
    ]);
    assert_eq!(answer["outcome"], "accepted");
    let doc = &a.json(&["get", "firmware", "thin-os"])["document"];
    assert_eq!(doc["version"], 1, "one change set created the document");
    assert_eq!(doc["document"]["version"], "9.1");
    assert_eq!(doc["document"]["size"], 2_500_000);
    assert_eq!(doc["document"]["blob"].as_str().unwrap(), sha256_file(&image));
    assert_eq!(doc["document"]["kernel"].as_str().unwrap(), sha256_file(&kernel));
    a.ok(&["put", "terminals", "t1", "{\"mac\":\"02:00:00:00:03:01\",\"firmware\":\"thin-os\"}"]);
    let script = Command::new("curl")
        .args(["-sS", &format!("http://{}/boot/v1/ipxe/020000000301", a.boot)])
        .output()
        .unwrap();
    let script = String::from_utf8_lossy(&script.stdout);
    assert!(script.starts_with("#!ipxe"), "{script}");
    assert!(
        script.contains("kernel") && script.contains("quiet splash") && script.contains("--timeout"),
        "{script}"
    );
    let out = root.path().join("boot");
    let output = boot(&a.boot, "02:00:00:00:03:01", &out, &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(sha256_file(&out.join("firmware-thin-os")), sha256_file(&image));
    // A missing file is a clear failure that writes nothing.
    let missing = a.cli(&["firmware", "add", "other", "/nonexistent/file", "--version", "1"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(a.cli(&["get", "firmware", "other"]).status.code() == Some(1));
}
