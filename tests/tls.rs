//! TLS end to end: certificates made with `tandem cert`, real `tandem serve` processes on 127.0.0.1 with
//! `[tls]`, reached by curl (`--cacert`, `--cert`) and by the CLI (`--ca-cert`).
//!
//! - a pair with a witness: HTTPS on the API (curl with the CA answers, without it refuses the certificate),
//!   mutual TLS between peers (writes through the follower reach the leader; a membership change made on the
//!   follower is proxied to the leader's API over HTTPS with the caller's token); the peer port refuses a
//!   client with no certificate or one of another CA during the handshake, and with the cluster's certificate
//!   but no secret it still answers 401 (the secret is a second factor); a node whose certificates another CA
//!   made cannot be added;
//! - a TLS handshake holds a place in the connection caps and is bounded by `header_read_timeout`;
//! - `SIGHUP` reloads the files: a rustls client sees the new certificate served, a broken file keeps the old;
//! - plain HTTP on a non-loopback address is refused at start, before anything is bound.

mod harness;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{Node, tandem_bin};

const TOKEN: &str = "tls-test-admin-token-0123456789";

/// Runs `tandem cert ARGS`, which must succeed.
fn tandem_cert(args: &[&str]) {
    let output = Command::new(tandem_bin()).arg("cert").args(args).output().expect("run tandem cert");
    assert!(output.status.success(), "tandem cert {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A cluster CA in `dir` and a certificate for each of `names`, valid for 127.0.0.1.
fn make_certs(dir: &Path, names: &[&str]) -> PathBuf {
    let ca_dir = dir.display().to_string();
    tandem_cert(&["init", "--dir", &ca_dir]);
    for name in names {
        tandem_cert(&["node", name, "--ip", "127.0.0.1", "--dns", "localhost", "--ca-dir", &ca_dir]);
    }
    dir.join("ca.pem")
}

/// `node` with the TLS files of its name in `dir`.
fn with_tls(node: Node, dir: &Path) -> Node {
    let (cert, key) = (dir.join(format!("{}.pem", node.name)), dir.join(format!("{}-key.pem", node.name)));
    node.with_tls(&dir.join("ca.pem"), &cert, &key)
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl is installed")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn a_pair_with_a_witness_speaks_https_to_clients_and_mutual_tls_between_peers() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    let ca = make_certs(&certs, &["a", "b", "w"]);
    let tokens = format!("[[tokens]]\nname = \"admin\"\nrole = \"admin\"\nsecret = \"{TOKEN}\"\n");
    let (a, b, _w) = harness::pair_with_witness_configured(root.path(), |node| {
        with_tls(node, &certs).with_config(&tokens).with_token(TOKEN)
    });
    b.wait_status("b follows a", Duration::from_secs(20), |s| s["leader_name"] == "a");

    // curl verifies the API's certificate with the cluster CA, and refuses it without.
    let status_url = format!("https://{}/v1/status", a.api);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let answer = curl(&["--cacert", ca.to_str().unwrap(), "-H", &bearer, &status_url]);
    assert!(answer.status.success(), "curl --cacert: {}", text(&answer));
    let status: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
    assert_eq!(status["leader_name"], "a");
    let untrusted = curl(&["-H", &bearer, &status_url]);
    assert!(
        !untrusted.status.success(),
        "curl without the CA must refuse the certificate: {}",
        text(&untrusted)
    );
    assert!(text(&untrusted).to_lowercase().contains("certificate"), "{}", text(&untrusted));
    let plain = curl(&[&format!("http://{}/v1/status", a.api)]);
    assert!(!plain.status.success() || !text(&plain).contains("leader_name"), "no plain HTTP on a TLS port");

    // The CLI: a write through the follower is forwarded to the leader over mutual TLS.
    b.ok(&["put", "notes", "through-b", r#"{"via": "b"}"#]);
    let document = a.json(&["get", "notes", "through-b"]);
    assert_eq!(document["document"]["document"]["via"], "b", "{document}");
    // A membership change made on the follower is proxied to the leader's API over HTTPS, with the token.
    b.ok(&["servers", "lead", "b"]);
    a.wait_status("b leads", Duration::from_secs(20), |s| s["leader_name"] == "b");
    a.ok(&["put", "notes", "through-a", "{}"]);
    b.json(&["get", "notes", "through-a"]);
    // Every member is reached over HTTPS by `history verify` (their addresses come from the membership).
    a.ok(&["history", "verify"]);

    // The CLI without --ca-cert refuses the certificate and says what to do.
    let output = harness::cli_with_token(&a.url(), TOKEN, &["status"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(text(&output).contains("--ca-cert"), "{}", text(&output));

    // The peer port: no client certificate, or one of another CA, is refused in the handshake.
    let vote_url = format!("https://{}/raft/vote", a.peer);
    let no_certificate =
        curl(&["--cacert", ca.to_str().unwrap(), "-X", "POST", "-w", "%{http_code}", &vote_url]);
    assert!(!no_certificate.status.success(), "a peer without a certificate: {}", text(&no_certificate));
    assert!(!String::from_utf8_lossy(&no_certificate.stdout).starts_with('4'), "refused before any HTTP");
    let other = root.path().join("other-ca");
    make_certs(&other, &["a", "x"]);
    let (other_cert, other_key) = (other.join("a.pem"), other.join("a-key.pem"));
    let foreign = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        other_cert.to_str().unwrap(),
        "--key",
        other_key.to_str().unwrap(),
        "-X",
        "POST",
        &vote_url,
    ]);
    assert!(!foreign.status.success(), "a certificate of another CA: {}", text(&foreign));
    // With the cluster's certificate the handshake passes, and the secret is still required (401).
    let (cert, key) = (certs.join("b.pem"), certs.join("b-key.pem"));
    let member = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "-X",
        "POST",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &vote_url,
    ]);
    assert_eq!(String::from_utf8_lossy(&member.stdout), "401", "{}", text(&member));
    assert!(
        a.log_text().contains("peer endpoint: refused a connection"),
        "the refusal is logged:\n{}",
        a.log_text()
    );

    // A node whose certificates another CA made cannot be added: its certificate is refused, with a hint.
    let mut x = with_tls(Node::new(root.path(), "x", "data"), &other);
    x.start(true);
    let output = a.cli(&["servers", "add", "x", "--api", &x.api]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(text(&output).contains("invalid peer certificate"), "{}", text(&output));
    assert_eq!(a.json(&["servers", "list"])["servers"].as_array().unwrap().len(), 3, "x was not added");
}

/// The certificate a TLS server at `address` presents, read with a rustls client that trusts `ca`.
fn served_certificate(address: &str, ca: &Path) -> Vec<u8> {
    let config = tandem_cluster::tls::client_config_trusting(ca).unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut socket = TcpStream::connect(address).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).expect("a TLS handshake");
    }
    connection.peer_certificates().expect("the server presented a certificate")[0].to_vec()
}

fn file_certificate(path: &Path) -> Vec<u8> {
    tandem_cluster::tls::read_certificates(path).unwrap()[0].to_vec()
}

#[test]
fn sighup_reloads_the_certificates_and_a_broken_file_keeps_the_old_ones() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    let ca = make_certs(&certs, &["a"]);
    let limits = "[limits.api]\nheader_read_timeout = \"1s\"\nmax_connections_per_source = 2\n";
    let mut a = with_tls(Node::new(root.path(), "a", "data"), &certs).with_config(limits);
    a.start(false);
    handshakes_are_bounded_and_counted(&a.api);
    let (cert, key) = (certs.join("a.pem"), certs.join("a-key.pem"));
    let first = file_certificate(&cert);
    assert_eq!(served_certificate(&a.api, &ca), first);

    // Renew: new key and certificate in place, then SIGHUP.
    assert!(a.log_text().contains("valid until"), "the certificate's end is logged at start");
    let metrics = curl(&["--cacert", ca.to_str().unwrap(), &format!("https://{}/metrics", a.api)]);
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let not_after = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tandem_tls_certificate_not_after_timestamp_seconds "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no certificate end in /metrics:\n{metrics}"));
    let in_two_years =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
            + 729.0 * 86400.0;
    assert!(not_after > in_two_years, "a new node certificate is valid 730 days: {not_after}");
    // Renewed for 10 days only: the reload warns that it ends soon.
    tandem_cert(&["node", "a", "--ip", "127.0.0.1", "--days", "10", "--ca-dir", certs.to_str().unwrap()]);
    let renewed = file_certificate(&cert);
    assert_ne!(renewed, first);
    assert_eq!(served_certificate(&a.api, &ca), first, "nothing changes before the signal");
    hangup(&a);
    wait_until("the renewed certificate is served", || served_certificate(&a.api, &ca) == renewed);
    wait_until("the reload, and the renewed certificate's short validity, are logged", || {
        let log = a.log_text();
        log.contains("TLS certificates reloaded") && log.contains("days left): renew it")
    });
    a.ok(&["put", "notes", "after-reload", "{}"]);

    // A broken key: the reload fails, is logged, and the node keeps serving the renewed certificate.
    std::fs::write(&key, "not a key").unwrap();
    hangup(&a);
    wait_until("the failed reload is logged", || a.log_text().contains("could not be reloaded"));
    assert_eq!(served_certificate(&a.api, &ca), renewed);
    a.ok(&["get", "notes", "after-reload"]);
}

/// Two connections that never start their TLS handshake take the two places of their source
/// (`max_connections_per_source = 2`): a third is refused at once with a `503`; after `header_read_timeout`
/// (1 s) both are closed (and the caller's next handshake succeeds).
fn handshakes_are_bounded_and_counted(api: &str) {
    use std::io::Read;
    let started = Instant::now();
    let stalled: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(api).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(api).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = third.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "the third connection is over the cap: {answer:?}");
    for mut connection in stalled {
        connection.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        let closed = match connection.read(&mut byte) {
            Ok(n) => n == 0,
            Err(error) => {
                !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            }
        };
        assert!(closed, "a handshake that never starts is closed");
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "closed after header_read_timeout, not {elapsed:?}");
}

fn hangup(node: &Node) {
    let pid = node.pid().expect("running").to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
}

fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn plain_http_on_a_non_loopback_address_is_refused_before_anything_is_bound() {
    let root = tempfile::tempdir().unwrap();
    let port = harness::free_port();
    let node = Node::new(root.path(), "a", "data");
    // The check runs before any socket is bound: 0.0.0.0 is never listened on.
    let mut child = Command::new(tandem_bin())
        .args(["serve", "--data-dir"])
        .arg(&node.data_dir)
        .args(["--api", &node.api, "--peer", &format!("0.0.0.0:{port}")])
        .args(["--advertise-peer", &format!("127.0.0.1:{port}"), "--boot", &node.boot, "--tftp", &node.tftp])
        .args(["--cluster-secret", harness::SECRET])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tandem serve with plain HTTP on 0.0.0.0 did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("not a loopback address") && message.contains("[tls]"), "{message}");
    assert!(message.contains("tandem cert"), "{message}");
    assert!(!node.data_dir.exists(), "refused before the data directory was even made");
}
