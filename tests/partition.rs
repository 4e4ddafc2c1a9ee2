//! Network partitions between real nodes: a pair with a witness, each node in a Linux network namespace of
//! its own, links cut and healed with the neighbour table (`harness/netns.rs` says how and why), writers
//! sending real HTTP writes (`curl`) through the data nodes the whole time and an observer reading every
//! data node's history as it grows.
//!
//! Scenarios (issue 11, item 7): (a) the leader cut off from both others, (b) a one-way cut from the leader
//! to the other data node, (c) the witness isolated, (d) a link flapping every 200–700 ms for 60 s, (e) the
//! follower isolated while nothing is written through it, then healed. In each one:
//! - a write is acknowledged only by the majority side (checked where the scenario makes a side a minority:
//!   nothing sent through the cut-off leader during the cut is acknowledged during the cut);
//! - after healing, every acknowledged write is in both data nodes' histories, at the revision it was
//!   acknowledged with and with the bytes that were sent;
//! - both data nodes end with identical histories (and `tandem history verify` finds every member's hash
//!   chain equal);
//! - no node ever shows two different events under one revision (the observer compares every event it
//!   reads, from any node at any time, with the first one it saw at that revision).
//!
//! (f) Delay and loss: this machine's kernel has no `sch_netem`, so `harness/wire.rs` emulates netem in user
//! space (TUN devices, a forwarder in the test process that delays and drops packets between the nodes): 50 ms
//! ± 20 ms and 5 % loss on every link, once with the default Raft timing and once with the slow-link timing of
//! docs/cluster.md; write latency and the failover time under it are printed, safety is asserted as above.
//!
//! The tests need root (namespaces, veth pairs, a bridge, TUN devices) and iproute2; elsewhere they print
//! "skipped: …" and pass.
//!
//! Run alone: `cargo test --test partition -- --nocapture` (the figures are printed).

mod harness;
#[path = "harness/netns.rs"]
mod netns;
#[path = "harness/wire.rs"]
mod wire;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::Node;
use netns::Lab;
use serde_json::{Value, json};
use wire::{Dice, Impairment, WireLab};

const ADMIN: &str = "admin-secret-0123456789";

/// Nodes on non-loopback addresses need tokens (an open API is refused there), and TLS, which
/// [`Lab::node`] gives them (the writers' `curl` trusts the lab's CA).
fn config() -> String {
    format!("[[tokens]]\nname = \"ada\"\nrole = \"admin\"\nsecret = \"{ADMIN}\"\n")
}

/// Every line printed goes to stderr at once (the figures of a run).
fn say(line: &str) {
    eprintln!("partition: {line}");
}

/// The network a cluster's namespaces are joined by: a bridge whose links can be cut (`harness/netns.rs`), or
/// an emulated wire with delay and loss (`harness/wire.rs`).
enum Network {
    Bridge(Lab),
    Wire(WireLab),
}

impl Network {
    fn node(&self, root: &std::path::Path, name: &str, role: &str) -> Node {
        match self {
            Network::Bridge(lab) => lab.node(root, name, role),
            Network::Wire(lab) => lab.node(root, name, role),
        }
    }
}

/// One running pair with a witness in its own lab. Fields drop in order: nodes first, then the directory,
/// then the namespaces.
struct Cluster {
    nodes: BTreeMap<String, Node>,
    _root: tempfile::TempDir,
    network: Network,
}

impl Cluster {
    /// Starts `a`, `b` (data) and `w` (witness) in namespaces of their own on a bridge and forms the cluster
    /// through `a`; `None` (after printing why) where namespaces cannot be made.
    fn start(test: &str) -> Option<Cluster> {
        if let Some(why) = Lab::unavailable() {
            say(&format!("skipped {test}: {why}"));
            return None;
        }
        let lab = Lab::new(&["a", "b", "w"]).unwrap_or_else(|e| panic!("{test}: cannot build the lab: {e}"));
        Some(Cluster::form(Network::Bridge(lab), ""))
    }

    /// Like [`Cluster::start`], on an emulated wire (no impairment yet), with `extra_config` added to every
    /// node's config file.
    fn start_wired(test: &str, extra_config: &str) -> Option<Cluster> {
        if let Some(why) = Lab::unavailable() {
            say(&format!("skipped {test}: {why}"));
            return None;
        }
        let lab = WireLab::new(&["a", "b", "w"], Impairment::NONE)
            .unwrap_or_else(|e| panic!("{test}: cannot build the wire lab: {e}"));
        Some(Cluster::form(Network::Wire(lab), extra_config))
    }

    fn form(network: Network, extra_config: &str) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let node = |name: &str, role: &str| {
            network
                .node(root.path(), name, role)
                .with_config(&format!("{}{extra_config}", config()))
                .with_token(ADMIN)
        };
        let (mut a, mut b, mut w) = (node("a", "data"), node("b", "data"), node("w", "witness"));
        a.start(false);
        b.start(true);
        w.start(true);
        a.add(&b);
        a.add(&w);
        let nodes = [a, b, w].into_iter().map(|n| (n.name.clone(), n)).collect();
        let cluster = Cluster { nodes, _root: root, network };
        cluster.wait_all_agree(Duration::from_secs(20));
        cluster
    }

    /// The bridge of a cluster made by [`Cluster::start`] (where links are cut).
    fn lab(&self) -> &Lab {
        match &self.network {
            Network::Bridge(lab) => lab,
            Network::Wire(_) => panic!("this cluster runs on an emulated wire, not on a bridge"),
        }
    }

    /// The wire of a cluster made by [`Cluster::start_wired`].
    fn wire(&self) -> &WireLab {
        match &self.network {
            Network::Wire(lab) => lab,
            Network::Bridge(_) => panic!("this cluster runs on a bridge, not on an emulated wire"),
        }
    }

    fn node(&self, name: &str) -> &Node {
        &self.nodes[name]
    }

    /// The leader's name, as `via` sees it (waits, bounded, until it knows one).
    fn leader(&self, via: &str) -> String {
        let status =
            self.node(via).wait_status("a leader", Duration::from_secs(15), |s| s["leader_name"].is_string());
        status["leader_name"].as_str().unwrap().to_string()
    }

    /// The other data node.
    fn other_data(&self, name: &str) -> String {
        if name == "a" { "b".into() } else { "a".into() }
    }

    /// Waits until every node answers, names the same leader, and is at the same revision with nothing left
    /// to apply; returns how long that took. On failure the panic names, per node, what it last said (or why
    /// it said nothing), before the logs.
    fn wait_all_agree(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        let mut last: Vec<(String, Result<Value, String>)> = Vec::new();
        while started.elapsed() < timeout {
            last = self.nodes.values().map(|node| (node.name.clone(), status_or_why(node))).collect();
            let statuses: Vec<&Value> = last.iter().filter_map(|(_, s)| s.as_ref().ok()).collect();
            let agreed = statuses.len() == last.len()
                && statuses.windows(2).all(|w| {
                    let (x, y) = (w[0], w[1]);
                    x["leader_name"].is_string()
                        && x["leader_name"] == y["leader_name"]
                        && x["revision"] == y["revision"]
                        && x["last_log_index"] == y["last_log_index"]
                        && x["applied_index"] == y["applied_index"]
                });
            if agreed {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let said: Vec<String> = last
            .iter()
            .map(|(name, status)| match status {
                Ok(s) => format!(
                    "{name}: leader {} term {} revision {} last_log_index {} applied_index {} peers {}",
                    s["leader_name"],
                    s["term"],
                    s["revision"],
                    s["last_log_index"],
                    s["applied_index"],
                    s["peers"]
                ),
                Err(why) => format!("{name}: no status: {why}"),
            })
            .collect();
        // A node alive but silent may be stuck: where each of its threads waits tells on what.
        let stacks: Vec<String> = last
            .iter()
            .filter(|(_, status)| status.is_err())
            .filter_map(|(name, _)| {
                self.node(name).thread_stacks().map(|s| format!("--- {name}: threads ---\n{}", condensed(&s)))
            })
            .collect();
        panic!(
            "the nodes did not agree within {timeout:?}; last said:\n{}\n{}\n{}",
            said.join("\n"),
            stacks.join("\n"),
            self.logs()
        );
    }

    fn logs(&self) -> String {
        self.nodes.values().map(|n| format!("--- {} ---\n{}", n.name, tail(&n.log_text(), 60))).collect()
    }

    /// After healing: the nodes agree, every acknowledged write is where it was acknowledged, the data nodes'
    /// histories are identical and every member's hash chain is the same.
    fn check_after_heal(&self, load: Load) -> Totals {
        // Writes go on for 2 s over the healed network, then stop, and every node must agree.
        std::thread::sleep(Duration::from_secs(2));
        let outcome = load.finish();
        let converged = self.wait_all_agree(Duration::from_secs(30));
        let histories: Vec<Vec<Value>> = ["a", "b"].iter().map(|n| self.node(n).history()).collect();
        assert_eq!(histories[0].len(), histories[1].len(), "a and b hold histories of different lengths");
        for (x, y) in histories[0].iter().zip(&histories[1]) {
            assert_eq!(x, y, "a and b differ at revision {}", x["revision"]);
        }
        let by_revision: BTreeMap<u64, &Value> =
            histories[0].iter().map(|e| (e["revision"].as_u64().unwrap(), e)).collect();
        assert_eq!(by_revision.len(), histories[0].len(), "a revision appears twice in the history");
        for ack in &outcome.acks {
            let event = by_revision.get(&ack.revision).unwrap_or_else(|| {
                panic!("acknowledged write {} at revision {} is missing after healing", ack.id, ack.revision)
            });
            let change = event["changes"]
                .as_array()
                .and_then(|changes| changes.iter().find(|c| c["id"] == ack.id.as_str()));
            let Some(change) = change else {
                panic!(
                    "revision {} names another change than the acknowledged write {}: {event}",
                    ack.revision, ack.id
                )
            };
            assert_eq!(change["document"], ack.value, "write {} came back with other bytes", ack.id);
        }
        let verify = self.node("a").json(&["history", "verify"]);
        assert!(
            verify["differences"].as_array().is_some_and(|d| d.is_empty())
                && verify["problems"].as_array().is_some_and(|p| p.is_empty())
                && verify["unreachable"].as_array().is_some_and(|u| u.is_empty()),
            "history verify found the members' chains unequal: {verify:#}"
        );
        let conflicts = outcome.conflicts;
        assert!(conflicts.is_empty(), "a revision showed two different events: {conflicts:#?}");
        let totals = Totals {
            acknowledged: outcome.acks.len(),
            failed: outcome.failed,
            revisions: histories[0].len(),
            converged,
        };
        say(&format!(
            "{} writes acknowledged, {} not ({:?}), {} revisions identical on a and b, all nodes agreed {:?} after \
             the writers stopped",
            totals.acknowledged, totals.failed, outcome.failures, totals.revisions, totals.converged
        ));
        totals
    }
}

#[derive(Debug)]
struct Totals {
    acknowledged: usize,
    failed: usize,
    revisions: usize,
    converged: Duration,
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A gdb dump of every thread's stack cut to what tells where a thread waits: per thread, its header and the
/// first frames in Tandem's, openraft's or the standard library's locks.
fn condensed(stacks: &str) -> String {
    let wanted = ["tandem", "openraft", "std::sync", "futex", "sled"];
    stacks
        .split("\nThread ")
        .skip(1)
        .map(|thread| {
            let mut lines = thread.lines();
            let header = lines.next().unwrap_or_default();
            let frames: Vec<&str> = lines
                .filter(|l| l.starts_with('#') && wanted.iter().any(|w| l.contains(w)))
                .take(6)
                .collect();
            format!("Thread {header}\n{}", frames.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The node's status, or why there is none (no answer, or the code and error it answered).
fn status_or_why(node: &Node) -> Result<Value, String> {
    let answer = curl(&node.url(), "GET", "/v1/status", None);
    match answer.as_ref().filter(|(code, _)| *code == 200) {
        Some((_, body)) => serde_json::from_str(body).map_err(|error| format!("unreadable: {error}")),
        None => Err(match &answer {
            Some((_, body)) => format!("{}: {}", failure(answer.clone()), tail(body, 3)),
            None => format!("{}; process: {}", failure(None), node.process_state()),
        }),
    }
}

/// The node's status, or `None` when it gives none ([`status_or_why`] says why).
fn quiet_status(node: &Node) -> Option<Value> {
    status_or_why(node).ok()
}

/// One HTTP request with `curl` (at most 3 s): the status code and body, or `None` when nothing answered.
fn curl(base: &str, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, String)> {
    let mut command = Command::new("curl");
    command
        .args(["-s", "--max-time", "3", "-X", method, "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(netns::ca_dir().join("ca.pem"))
        .args(["-H", &format!("Authorization: Bearer {ADMIN}")]);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "--data-binary", &body.to_string()]);
    }
    let output = command.arg(format!("{base}{path}")).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok()?;
    (code != 0).then(|| (code, body.to_string()))
}

/// A write acknowledged to a writer: through which node, what, at which revision, and when.
#[derive(Debug, Clone)]
struct Ack {
    via: String,
    id: String,
    value: Value,
    revision: u64,
    sent: Instant,
    acknowledged: Instant,
}

/// What a [`Load`] saw.
#[derive(Debug, Default)]
struct Outcome {
    acks: Vec<Ack>,
    failed: usize,
    /// Why writes failed: `STATUS error-code`, or that nothing answered, with counts.
    failures: BTreeMap<String, usize>,
    conflicts: Vec<String>,
}

/// One writer's acknowledged writes and its failures by reason.
type WriterOutcome = (Vec<Ack>, BTreeMap<String, usize>);

/// Writers through some data nodes plus an observer of every data node's history, until [`Load::finish`].
struct Load {
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<WriterOutcome>>,
    observer: JoinHandle<Vec<String>>,
    acks: Arc<Mutex<Vec<Ack>>>,
}

/// Upper bounds of every loop (the tests stop them long before).
const MAX_WRITES_PER_WRITER: u64 = 20_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(180);

impl Load {
    /// Starts one writer through each node of `via` and an observer of `observed`. Each writer puts a new
    /// document (`parts/VIA-SEQ`) every ~20 ms and records the acknowledged ones.
    fn start(cluster: &Cluster, test: &str, via: &[&str], observed: &[&str]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let writers = via
            .iter()
            .map(|name| {
                let url = cluster.node(name).url();
                let (stop, acks, test, name) =
                    (stop.clone(), acks.clone(), test.to_string(), name.to_string());
                std::thread::spawn(move || {
                    let mut failed = BTreeMap::new();
                    let mut mine = Vec::new();
                    for seq in 0..MAX_WRITES_PER_WRITER {
                        if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_LOAD_TIME {
                            break;
                        }
                        let id = format!("{test}-{name}-{seq}");
                        let value = json!({"via": name, "seq": seq, "pad": "p".repeat(64)});
                        let sent = Instant::now();
                        let path = format!("/v1/docs/parts/{id}?reason=partition");
                        match curl(&url, "PUT", &path, Some(&value)) {
                            Some((200, body)) => {
                                let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                                match (answer["outcome"].as_str(), answer["revision"].as_u64()) {
                                    (Some("accepted"), Some(revision)) => {
                                        let ack = Ack {
                                            via: name.clone(),
                                            id,
                                            value,
                                            revision,
                                            sent,
                                            acknowledged: Instant::now(),
                                        };
                                        acks.lock().unwrap().push(ack.clone());
                                        mine.push(ack);
                                    }
                                    _ => panic!("a 200 that is not an accepted write: {body}"),
                                }
                            }
                            other => *failed.entry(failure(other)).or_insert(0) += 1,
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    (mine, failed)
                })
            })
            .collect();
        let observed: Vec<(String, String)> =
            observed.iter().map(|n| (n.to_string(), cluster.node(n).url())).collect();
        let observer = {
            let stop = stop.clone();
            std::thread::spawn(move || observe(&observed, &stop, started))
        };
        Load { stop, writers, observer, acks }
    }

    /// The writes acknowledged so far.
    fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut outcome = Outcome::default();
        for writer in self.writers {
            let (acks, failed) = writer.join().expect("a writer panicked");
            outcome.acks.extend(acks);
            outcome.failed += failed.values().sum::<usize>();
            for (reason, count) in failed {
                *outcome.failures.entry(reason).or_insert(0) += count;
            }
        }
        outcome.conflicts = self.observer.join().expect("the observer panicked");
        outcome
    }
}

/// Why a write failed, in a few words: the status and the API's error code, or that nothing answered.
fn failure(answer: Option<(u16, String)>) -> String {
    match answer {
        None => "no answer (refused, or nothing within 3 s)".into(),
        Some((code, body)) => {
            let error = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(String::from));
            format!("{code} {}", error.unwrap_or_default()).trim().to_string()
        }
    }
}

/// Reads every new event of every node's history every ~300 ms; returns every revision seen with two
/// different events (none, if all is well).
fn observe(nodes: &[(String, String)], stop: &AtomicBool, started: Instant) -> Vec<String> {
    let mut seen: BTreeMap<u64, (String, Value)> = BTreeMap::new();
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for _ in 0..2_000 {
        let last_round = stop.load(Ordering::Relaxed) || started.elapsed() > MAX_LOAD_TIME;
        for (name, url) in nodes {
            let from = *next.get(name).unwrap_or(&1);
            let Some((200, body)) = curl(url, "GET", &format!("/v1/history?from={from}&limit=2000"), None)
            else {
                continue;
            };
            let Ok(page) = serde_json::from_str::<Value>(&body) else { continue };
            for event in page["events"].as_array().into_iter().flatten() {
                let Some(revision) = event["revision"].as_u64() else { continue };
                match seen.get(&revision) {
                    Some((first_node, first)) if first != event => conflicts.push(format!(
                        "revision {revision}: {first_node} showed {first}, {name} showed {event}"
                    )),
                    Some(_) => {}
                    None => {
                        seen.insert(revision, (name.clone(), event.clone()));
                    }
                }
                next.insert(name.clone(), revision + 1);
            }
        }
        if last_round {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    conflicts
}

/// Writes acknowledged through `via` that were sent in `[from, to)` and acknowledged before `to`.
fn acknowledged_within(acks: &[Ack], via: &str, from: Instant, to: Instant) -> Vec<Ack> {
    acks.iter().filter(|a| a.via == via && a.sent >= from && a.acknowledged < to).cloned().collect()
}

/// (a) The leader is cut off from the other data node and the witness for 6 s: the others elect a leader
/// and take writes; nothing sent through the old leader during the cut is acknowledged during it.
#[test]
fn leader_cut_off_from_both() {
    let Some(cluster) = Cluster::start("leader_cut_off_from_both") else { return };
    let load = Load::start(&cluster, "a", &["a", "b"], &["a", "b"]);
    std::thread::sleep(Duration::from_secs(2));
    let old = cluster.leader("a");
    let survivor = cluster.other_data(&old);
    cluster.lab().isolate(&old);
    let cut = Instant::now();
    // The witness may win the election first; it hands over to the data node soon after.
    let new = cluster.node(&survivor).wait_status("a new leader", Duration::from_secs(10), |s| {
        s["leader_name"].as_str().is_some_and(|name| name != old)
    });
    let failover = cut.elapsed();
    std::thread::sleep(Duration::from_secs(6).saturating_sub(cut.elapsed()));
    let acks = load.acks();
    let healed = Instant::now();
    cluster.lab().heal_all();
    let minority = acknowledged_within(&acks, &old, cut, healed);
    assert!(
        minority.is_empty(),
        "the cut-off leader {old} acknowledged writes during the cut: {minority:#?}"
    );
    let majority = acknowledged_within(&acks, &survivor, cut, healed);
    assert!(
        !majority.is_empty(),
        "{survivor} acknowledged nothing during the cut (new leader {})",
        new["leader_name"]
    );
    let first = majority.iter().map(|a| a.acknowledged - cut).min().unwrap();
    say(&format!(
        "(a) leader {old} cut off: {} led after {failover:?}; first write through {survivor} acknowledged \
         {first:?} after the cut (a request in flight at the cut waits for its 3 s timeout); {} writes \
         acknowledged by the majority during the cut, 0 by {old}",
        new["leader_name"].as_str().unwrap_or("?"),
        majority.len()
    ));
    cluster.check_after_heal(load);
}

/// (b) A one-way cut from the leader to the other data node for 8 s (the witness hears both): writes go on
/// through a majority, and after healing nothing acknowledged is lost.
#[test]
fn one_way_cut_from_the_leader() {
    let Some(cluster) = Cluster::start("one_way_cut_from_the_leader") else { return };
    let load = Load::start(&cluster, "b", &["a", "b"], &["a", "b"]);
    std::thread::sleep(Duration::from_secs(2));
    let leader = cluster.leader("a");
    let follower = cluster.other_data(&leader);
    cluster.lab().cut(&leader, &follower);
    let cut = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let healed = Instant::now();
    let acks = load.acks();
    cluster.lab().heal_all();
    let during: usize = ["a", "b"].iter().map(|n| acknowledged_within(&acks, n, cut, healed).len()).sum();
    assert!(during > 0, "no write was acknowledged during the one-way cut {leader} -> {follower}");
    let leader_after = cluster.leader("a");
    say(&format!(
        "(b) one-way cut {leader} -> {follower}: {during} writes acknowledged during the cut; leader after: \
         {leader_after}"
    ));
    cluster.check_after_heal(load);
}

/// (c) The witness is cut off from both data nodes for 6 s: the pair is still a majority, keeps its leader
/// and takes writes through both nodes; status says the cluster is degraded until the witness is back.
#[test]
fn witness_isolated() {
    let Some(cluster) = Cluster::start("witness_isolated") else { return };
    let load = Load::start(&cluster, "c", &["a", "b"], &["a", "b"]);
    std::thread::sleep(Duration::from_secs(2));
    let leader = cluster.leader("a");
    cluster.lab().isolate("w");
    let cut = Instant::now();
    cluster.node(&leader).wait_status(
        "the leader to see the witness unreachable",
        Duration::from_secs(10),
        |s| {
            s["peers"].as_array().is_some_and(|peers| {
                peers.iter().any(|p| p["name"] == "w" && p["sync"] != "in_sync" && p["sync"] != "catching_up")
            })
        },
    );
    std::thread::sleep(Duration::from_secs(6).saturating_sub(cut.elapsed()));
    let healed = Instant::now();
    let acks = load.acks();
    cluster.lab().heal_all();
    for via in ["a", "b"] {
        let during = acknowledged_within(&acks, via, cut, healed);
        assert!(
            during.len() >= 10,
            "only {} writes through {via} were acknowledged with the witness cut off",
            during.len()
        );
    }
    assert_eq!(cluster.leader("a"), leader, "isolating the witness changed the leader");
    cluster.node(&leader).wait_status("the witness back in sync", Duration::from_secs(15), |s| {
        s["peers"]
            .as_array()
            .is_some_and(|peers| peers.iter().any(|p| p["name"] == "w" && p["sync"] == "in_sync"))
    });
    say(&format!("(c) witness isolated: leader {leader} kept, writes through both data nodes went on"));
    cluster.check_after_heal(load);
}

/// (d) For 60 s, one of the three links (both directions) goes down for 200–700 ms, then everything is up
/// for 200–700 ms, again and again; writers through both data nodes the whole time.
#[test]
fn flapping_link() {
    let Some(cluster) = Cluster::start("flapping_link") else { return };
    let seconds: u64 = std::env::var("TANDEM_FLAP_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut random = Dice(seed);
    let load = Load::start(&cluster, "d", &["a", "b"], &["a", "b"]);
    let links = [("a", "b"), ("a", "w"), ("b", "w")];
    let started = Instant::now();
    let mut flaps = 0;
    let mut leaders = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(seconds) && flaps < 1_000 {
        let (x, y) = links[random.below(3) as usize];
        cluster.lab().cut(x, y);
        cluster.lab().cut(y, x);
        std::thread::sleep(Duration::from_millis(200 + random.below(501)));
        cluster.lab().heal(x, y);
        cluster.lab().heal(y, x);
        std::thread::sleep(Duration::from_millis(200 + random.below(501)));
        flaps += 1;
        if let Some(status) = quiet_status(cluster.node("a")) {
            leaders.insert(status["leader_name"].as_str().unwrap_or("none").to_string());
        }
    }
    cluster.lab().heal_all();
    let totals = cluster.check_after_heal(load);
    assert!(totals.acknowledged > 0, "nothing was acknowledged while the links flapped");
    say(&format!(
        "(d) {flaps} flaps in {:?} (seed {seed}); leaders seen by a: {leaders:?}",
        started.elapsed()
    ));
}

/// (e) The follower data node is cut off for 5 s while writes go only through the leader (the minority
/// writes nothing); healed, it catches up.
#[test]
fn follower_isolated_then_healed() {
    let Some(cluster) = Cluster::start("follower_isolated_then_healed") else { return };
    let leader = cluster.leader("a");
    let follower = cluster.other_data(&leader);
    let load = Load::start(&cluster, "e", &[leader.as_str()], &["a", "b"]);
    std::thread::sleep(Duration::from_secs(1));
    let term_before = cluster.node(&leader).status()["term"].as_u64().unwrap();
    cluster.lab().isolate(&follower);
    let cut = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let healed = Instant::now();
    cluster.lab().heal_all();
    let during = acknowledged_within(&load.acks(), &leader, cut, healed);
    assert!(during.len() >= 10, "only {} writes acknowledged while the follower was cut off", during.len());
    let caught_up = cluster.wait_all_agree(Duration::from_secs(30));
    let status = cluster.node(&leader).status();
    // openraft 0.9 has no pre-vote: the cut-off follower kept campaigning, and its higher term makes the
    // leader step down when they meet again. Measured, not asserted: how long writes stalled around the heal.
    let acks = load.acks();
    let mut times: Vec<Instant> = acks.iter().filter(|a| a.sent >= healed).map(|a| a.acknowledged).collect();
    times.sort();
    let stall = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    say(&format!(
        "(e) follower {follower} cut off 5 s: {} writes acknowledged meanwhile; healed, all nodes agreed after \
         {caught_up:?}; term {term_before} -> {} (leader {}), longest gap between acknowledged writes after \
         healing {stall:?}",
        during.len(),
        status["term"],
        status["leader_name"].as_str().unwrap_or("none")
    ));
    cluster.check_after_heal(load);
}

/// Latency percentiles of the writes acknowledged through `via` that were sent in `[from, to)`: (count, p50,
/// p99, max).
fn latencies(acks: &[Ack], via: &str, from: Instant, to: Instant) -> (usize, Duration, Duration, Duration) {
    let mut times: Vec<Duration> = acks
        .iter()
        .filter(|a| a.via == via && a.sent >= from && a.sent < to)
        .map(|a| a.acknowledged - a.sent)
        .collect();
    times.sort();
    let at = |q: f64| times.get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)));
    let pick = |q: f64| at(q).copied().unwrap_or_default();
    (times.len(), pick(0.5), pick(0.99), times.last().copied().unwrap_or_default())
}

fn show((count, p50, p99, max): (usize, Duration, Duration, Duration)) -> String {
    format!("{count} acknowledged, p50 {p50:.1?}, p99 {p99:.1?}, max {max:.1?}")
}

/// How long scenario (f) waits for a write through the survivor after the leader is killed.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

/// The slow-link timing of docs/cluster.md ("Timing on slow links"): heartbeats every 450 ms, each answer
/// awaited 300 ms (a round trip of up to 140 ms plus a retransmission); elections after 1.5–3 s of silence
/// plus the 3 s lease.
const SLOW_LINK_RAFT: &str = "[raft]\nheartbeat_interval_ms = 300\nelection_timeout_ms = 1500\n";

/// (f) Delay and loss on every link between the nodes (50 ms ± 20 ms and 5 % loss in each direction, netem's
/// `delay 50ms 20ms loss 5%`, emulated by `harness/wire.rs`), with the default Raft timing and with the
/// slow-link timing. Writers go through both data nodes the whole time. Measured and printed: write latency
/// through the leader and through the follower without and with the impairment, elections under it, and the
/// failover time when the leader is SIGKILLed under it. Asserted: the same safety as the other scenarios
/// (every acknowledged write kept at its revision after the killed node returns and the links are clean
/// again, identical histories), and, with the slow-link timing, that writes are acknowledged under the
/// impairment and a write goes through the survivor within 60 s of the SIGKILL (7.9–25 s measured: elections
/// under 5 % loss are slow to converge, and the witness may win first and hand back).
fn delay_and_loss(test: &str, timing_name: &str, raft: &str) {
    let Some(mut cluster) = Cluster::start_wired(test, raft) else { return };
    let load = Load::start(&cluster, "f", &["a", "b"], &["a", "b"]);
    std::thread::sleep(Duration::from_secs(4));
    let leader = cluster.leader("a");
    let follower = cluster.other_data(&leader);
    let clean_from = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let impaired_from = Instant::now();
    let term_before = cluster.node("a").status()["term"].as_u64().unwrap_or(0);
    let packets = |cluster: &Cluster| {
        let counters = &cluster.wire().counters;
        (counters.forwarded.load(Ordering::Relaxed), counters.dropped.load(Ordering::Relaxed))
    };
    let packets_before = packets(&cluster);
    cluster.wire().set_impairment(Impairment::netem(50, 20, 5.0));
    std::thread::sleep(Duration::from_secs(20));
    let killed_at = Instant::now();
    let status = quiet_status(cluster.node(&follower)).unwrap_or(Value::Null);
    let term_after = status["term"].as_u64().unwrap_or(0);
    let leader_now = status["leader_name"].as_str().unwrap_or("none").to_string();
    let acks = load.acks();
    let clean = [&leader, &follower].map(|via| show(latencies(&acks, via, clean_from, impaired_from)));
    // Let the impairment settle for 2 s before counting (the first seconds include connections that were
    // re-established).
    let settled = impaired_from + Duration::from_secs(2);
    let impaired = [&leader, &follower].map(|via| latencies(&acks, via, settled, killed_at));
    let packets_after = packets(&cluster);
    let (forwarded, dropped) = (packets_after.0 - packets_before.0, packets_after.1 - packets_before.1);
    say(&format!(
        "(f) {timing_name}: clean links: through leader {leader}: {}; through follower {follower}: {}",
        clean[0], clean[1]
    ));
    say(&format!(
        "(f) {timing_name}: 50 ms ± 20 ms, 5 % loss for 20 s: through {leader}: {}; through {follower}: {}; \
         term {term_before} -> {term_after} (leader now {leader_now}); wire: {forwarded} packets forwarded, \
         {dropped} dropped ({:.1} %)",
        show(impaired[0]),
        show(impaired[1]),
        100.0 * dropped as f64 / (forwarded + dropped).max(1) as f64
    ));
    // The leader dies under the impairment: how long until the survivor leads and takes a write?
    let victim = if leader_now == "none" || leader_now == "w" { leader.clone() } else { leader_now.clone() };
    let survivor = cluster.other_data(&victim);
    cluster.nodes.get_mut(&victim).unwrap().kill();
    let mut led_after = None;
    let mut wrote_after = None;
    // Who the survivor names as leader, each time it changes (the witness may lead for a while first).
    let mut leaders_seen: Vec<(Duration, String)> = Vec::new();
    for _ in 0..1_500 {
        if killed_at.elapsed() > FAILOVER_LIMIT {
            break;
        }
        // A status that does not come is recorded too ("(status: …)"), like a change of leader.
        let leader = match status_or_why(cluster.node(&survivor)) {
            Ok(status) => status["leader_name"].as_str().unwrap_or("none").to_string(),
            Err(why) => format!("(status: {why})"),
        };
        if leaders_seen.last().is_none_or(|(_, last)| *last != leader) {
            leaders_seen.push((killed_at.elapsed(), leader.clone()));
        }
        if led_after.is_none() && leader == survivor {
            led_after = Some(killed_at.elapsed());
        }
        let now = Instant::now();
        wrote_after = acknowledged_within(&load.acks(), &survivor, killed_at, now)
            .iter()
            .map(|a| a.acknowledged - killed_at)
            .min();
        if led_after.is_some() && wrote_after.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen: Vec<String> = leaders_seen.iter().map(|(at, name)| format!("{name} at {at:.2?}")).collect();
    say(&format!(
        "(f) {timing_name}: leader {victim} SIGKILLed under the impairment: first write through {survivor} \
         acknowledged after {}; {survivor} led after {}; leaders {survivor} named: {}",
        wrote_after.map_or(format!("(not within {FAILOVER_LIMIT:?})"), |d| format!("{d:.2?}")),
        led_after.map_or(format!("(not within {FAILOVER_LIMIT:?})"), |d| format!("{d:.2?}")),
        seen.join(", ")
    ));
    if !raft.is_empty() {
        assert!(
            impaired.iter().all(|(count, ..)| *count >= 10),
            "{timing_name}: fewer than 10 writes per data node acknowledged under the impairment: {impaired:?}"
        );
        assert!(
            wrote_after.is_some(),
            "{timing_name}: no write acknowledged within {FAILOVER_LIMIT:?} of the failover"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    cluster.nodes.get_mut(&victim).unwrap().start(false);
    std::thread::sleep(Duration::from_secs(3));
    cluster.wire().set_impairment(Impairment::NONE);
    cluster.check_after_heal(load);
}

#[test]
fn delay_and_loss_with_default_timing() {
    delay_and_loss("delay_and_loss_with_default_timing", "default timing", "");
}

#[test]
fn delay_and_loss_with_slow_link_timing() {
    delay_and_loss("delay_and_loss_with_slow_link_timing", "slow-link timing", SLOW_LINK_RAFT);
}
