//! `tandem demo`: one command starts a working pair with a witness, seeded with configuration, and Ctrl-C
//! takes it all away again.

mod harness;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[test]
fn the_demo_runs_a_seeded_pair_with_a_witness_and_ctrl_c_removes_it() {
    let mut demo = Command::new(harness::tandem_bin())
        .args(["demo", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tandem demo");
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready: Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(90)).expect("the demo got ready"))
            .expect("the ready line is JSON");
    assert_eq!(ready["ready"], true);
    let dir = ready["dir"].as_str().unwrap().to_string();
    let nodes = ready["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 3);
    let a = nodes[0]["api"].as_str().unwrap();
    let b = nodes[1]["api"].as_str().unwrap();
    // The console is b's (a follower: killing the leader leaves the page up), and it answers.
    assert_eq!(ready["console"], format!("{b}/"), "{ready}");
    let page = Command::new("curl").args(["-s", "--max-time", "5", &format!("{b}/")]).output().unwrap();
    assert!(String::from_utf8_lossy(&page.stdout).contains("<title>Tandem console</title>"), "{page:?}");

    // A working cluster: full+witness, the seeded history, t1 online, writes through either data node.
    let status: Value = serde_json::from_slice(&harness::cli(a, &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["mode"], "full+witness", "{status}");
    assert_eq!(status["terminals"]["online"], 1, "{status}");
    let history: Value = serde_json::from_slice(&harness::cli(a, &["history", "--json"]).stdout).unwrap();
    assert!(history["events"].as_array().unwrap().len() >= 6, "{history}");
    assert!(harness::cli(b, &["put", "notes", "hello", "{}", "--reason", "from b"]).status.success());

    // Ctrl-C: every node stops and the directory goes.
    let pids: Vec<u64> = nodes.iter().map(|n| n["pid"].as_u64().unwrap()).collect();
    assert!(pids.iter().all(|p| alive(*p)));
    Command::new("kill").args(["-INT", &demo.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = demo.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the demo did not stop within 30 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "the demo exited with {exit}");
    for pid in pids {
        assert!(!alive(pid), "node process {pid} outlived the demo");
    }
    assert!(!std::path::Path::new(&dir).exists(), "{dir} was not removed");
}
