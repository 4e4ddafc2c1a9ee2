//! Test harness: real `tandem` processes on 127.0.0.1 with free ports, and the `tandem` CLI as the client.
//!
//! Every wait is bounded; every process is killed when its [`Node`] is dropped, so a failing test leaves
//! nothing running.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECRET: &str = "test-cluster-secret";

/// A free TCP port on 127.0.0.1 (bound and released), never one this test process was given before: the
/// kernel may hand out a released port again at once, and a node given the same port for two of its
/// addresses refuses to start. The race with other processes is accepted.
pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if given.insert(port) {
            return port;
        }
    }
    panic!("no new free port in 1000 tries")
}

pub fn tandem_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tandem")
}

/// Why [`Node::wait_answering`] gave up: the process exited, or it was still silent at the deadline (each with
/// the node's log).
#[derive(Debug)]
pub enum Exit {
    Exited(String),
    Silent(String),
}

/// One `tandem serve` process and its addresses.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub role: String,
    pub data_dir: PathBuf,
    pub api: String,
    pub peer: String,
    pub boot: String,
    pub tftp: String,
    child: Option<Child>,
    log: PathBuf,
    extra_env: Vec<(String, String)>,
    config: Option<String>,
    /// The token the CLI helpers pass (TANDEM_TOKEN), if any.
    pub token: Option<String>,
    /// How the cluster secret is given: `--cluster-secret SECRET` unless [`Node::with_secret_file`].
    secret_args: [String; 2],
    /// `[tls]` (CA, certificate, key), appended to the config file; the CLI helpers then use `https://` and
    /// `--ca-cert`.
    pub tls: Option<[PathBuf; 3]>,
    /// The network namespace the process runs in (`ip netns exec`), if not the test's own.
    netns: Option<String>,
}

impl Node {
    /// A node (not started) with fresh ports and a data directory under `root`.
    pub fn new(root: &Path, name: &str, role: &str) -> Node {
        Node {
            name: name.into(),
            role: role.into(),
            data_dir: root.join(name),
            api: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            boot: format!("127.0.0.1:{}", free_port()),
            tftp: format!("127.0.0.1:{}", free_port()),
            child: None,
            log: root.join(format!("{name}.log")),
            extra_env: Vec::new(),
            config: None,
            token: None,
            secret_args: ["--cluster-secret".into(), SECRET.into()],
            tls: None,
            netns: None,
        }
    }

    /// Runs the node in network namespace `netns` on address `ip` with fixed ports (API 7070, peer 7071,
    /// boot 8080, TFTP 6969: the address is the namespace's own). See `harness/netns.rs`.
    pub fn in_netns(mut self, netns: &str, ip: &str) -> Node {
        self.netns = Some(netns.into());
        self.api = format!("{ip}:7070");
        self.peer = format!("{ip}:7071");
        self.boot = format!("{ip}:8080");
        self.tftp = format!("{ip}:6969");
        self
    }

    /// Serves TLS with these PEM files (`[tls] ca`, `cert`, `key`); the CLI helpers trust `ca`.
    pub fn with_tls(mut self, ca: &Path, cert: &Path, key: &Path) -> Node {
        self.tls = Some([ca.into(), cert.into(), key.into()]);
        self
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every thread's stack of the running process, by `gdb -batch` (bounded to 60 s), for a node that is
    /// alive but answers nothing; `None` where gdb is missing or the process is gone. The whole dump is also
    /// written to `$TMPDIR/tandem-stacks-NAME-PID.txt`.
    pub fn thread_stacks(&self) -> Option<String> {
        let pid = self.pid()?;
        let mut gdb = Command::new("timeout");
        gdb.args(["60", "gdb", "-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt 30"]);
        let output = gdb.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !text.contains("Thread") {
            return None;
        }
        let path = std::env::temp_dir().join(format!("tandem-stacks-{}-{pid}.txt", self.name));
        let _ = std::fs::write(&path, &text);
        Some(format!("(all of it in {})\n{text}", path.display()))
    }

    /// What the process is doing, for failure messages: its state letter from `/proc/PID/stat` (`R`
    /// running, `S` sleeping, `D` in the kernel, `Z` exited and not yet reaped, ...), or that none runs.
    pub fn process_state(&self) -> String {
        let Some(pid) = self.pid() else { return "not running".into() };
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name, which is in parentheses.
            Ok(stat) => stat.rsplit_once(") ").map_or(stat.clone(), |(_, rest)| {
                format!("pid {pid} state {}", rest.split(' ').next().unwrap_or("?"))
            }),
            Err(error) => format!("pid {pid}: {error}"),
        }
    }

    /// Gives the cluster secret with `--cluster-secret-file PATH` instead of on the command line.
    pub fn with_secret_file(mut self, path: &Path) -> Node {
        self.secret_args = ["--cluster-secret-file".into(), path.display().to_string()];
        self
    }

    /// Starts the node with this TOML config file text (`--config`; flags still set name, role and ports).
    pub fn with_config(mut self, toml: &str) -> Node {
        self.config = Some(toml.into());
        self
    }

    /// The token the CLI helpers ([`Node::cli`], [`Node::ok`], [`Node::json`]) present.
    pub fn with_token(mut self, token: &str) -> Node {
        self.token = Some(token.into());
        self
    }

    pub fn with_env(mut self, key: &str, value: &str) -> Node {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    /// Starts the process (`join`: wait to be added) and waits until its API answers. On a first start, a port
    /// taken by another test between [`free_port`] and the bind is replaced and the start retried (bounded).
    pub fn start(&mut self, join: bool) {
        for _ in 0..3 {
            let first_start = !self.data_dir.exists();
            match self.try_start(join) {
                Ok(()) => return,
                Err(log) if first_start && self.netns.is_none() && log.contains("Address already in use") => {
                    let _ = std::fs::remove_dir_all(&self.data_dir);
                    self.api = format!("127.0.0.1:{}", free_port());
                    self.peer = format!("127.0.0.1:{}", free_port());
                    self.boot = format!("127.0.0.1:{}", free_port());
                    self.tftp = format!("127.0.0.1:{}", free_port());
                }
                Err(log) => panic!("{} exited at start:\n{log}", self.name),
            }
        }
        panic!("{} could not find free ports in 3 tries:\n{}", self.name, self.log_text());
    }

    fn try_start(&mut self, join: bool) -> Result<(), String> {
        self.spawn(join);
        match self.wait_answering(Duration::from_secs(20)) {
            Ok(_) => Ok(()),
            Err(Exit::Exited(log)) => Err(log),
            Err(Exit::Silent(_)) => {
                panic!("{} did not answer within 20 s:\n{}", self.name, self.log_text())
            }
        }
    }

    /// Starts the process (`tandem serve` with this node's flags) without waiting for it.
    pub fn spawn(&mut self, join: bool) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, tandem_bin()]);
                command
            }
            None => Command::new(tandem_bin()),
        };
        command
            .args(["serve", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--name", &self.name, "--role", &self.role, "--api", &self.api, "--peer", &self.peer])
            .args(["--boot", &self.boot, "--tftp", &self.tftp])
            .args(&self.secret_args)
            .env(
                "RUST_LOG",
                std::env::var("TANDEM_TEST_RUST_LOG")
                    .unwrap_or_else(|_| "warn,tandem=info,tandem_cluster=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        if self.config.is_some() || self.tls.is_some() {
            let mut config = self.config.clone().unwrap_or_default();
            if let Some([ca, cert, key]) = &self.tls {
                config.push_str(&format!("\n[tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n"));
            }
            let path = self.log.with_extension("toml");
            std::fs::write(&path, config).unwrap();
            command.arg("--config").arg(path);
        }
        if join {
            command.arg("--join");
        }
        self.child = Some(command.spawn().expect("spawn tandem serve"));
    }

    /// Waits (bounded) until a spawned node's API answers `status`; returns how long that took. Never panics:
    /// a process that exits is [`Exit::Exited`] (with its log), one still silent at `timeout` is
    /// [`Exit::Silent`] (left running).
    pub fn wait_answering(&mut self, timeout: Duration) -> Result<Duration, Exit> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            if self.cli(&["status", "--json"]).status.success() {
                return Ok(started.elapsed());
            }
            let Some(child) = self.child.as_mut() else {
                return Err(Exit::Exited(format!("(not running)\n{}", self.log_text())));
            };
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Err(Exit::Exited(format!("({status})\n{}", self.log_text())));
            }
            if Instant::now() >= deadline {
                return Err(Exit::Silent(self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.api)
    }

    /// Runs `tandem --server <this node> ARGS` (with `--ca-cert` when it serves TLS).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(tandem_bin());
        command.arg("--server").arg(self.url());
        if let Some([ca, _, _]) = &self.tls {
            command.arg("--ca-cert").arg(ca);
        }
        if let Some(token) = &self.token {
            command.env("TANDEM_TOKEN", token);
        }
        command.args(args).output().expect("run tandem")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "tandem {args:?} on {} failed ({}): {}{}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `tandem ... --json` parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    pub fn status(&self) -> Value {
        self.json(&["status"])
    }

    /// Waits (bounded) until `check(status)` holds.
    pub fn wait_status(&self, what: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let output = self.cli(&["status", "--json"]);
            if output.status.success() {
                last = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
                if check(&last) {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{}: {what} did not happen within {timeout:?}; last status: {last:#}", self.name);
    }

    /// Adds `other` to this node's cluster with `tandem servers add`.
    pub fn add(&self, other: &Node) {
        self.ok(&["servers", "add", &other.name, "--api", &other.api, "--role", &other.role]);
    }

    /// The history as (revision, actor, changed keys) rows.
    pub fn history(&self) -> Vec<Value> {
        self.json(&["history", "--limit", "100000"])["events"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A pair of data nodes `a` and `b` with a witness `w`, formed through `a` with `tandem servers add`.
pub fn pair_with_witness(root: &Path) -> (Node, Node, Node) {
    pair_with_witness_configured(root, |node| node)
}

/// [`pair_with_witness`], each node passed through `configure` (data directory, environment) before it starts.
pub fn pair_with_witness_configured(root: &Path, configure: impl Fn(Node) -> Node) -> (Node, Node, Node) {
    let mut a = configure(Node::new(root, "a", "data"));
    let mut b = configure(Node::new(root, "b", "data"));
    let mut w = configure(Node::new(root, "w", "witness"));
    a.start(false);
    b.start(true);
    w.start(true);
    a.add(&b);
    a.add(&w);
    (a, b, w)
}

/// A pair of data nodes `a` and `b` without a witness, formed through `a`.
pub fn pair(root: &Path) -> (Node, Node) {
    let mut a = Node::new(root, "a", "data");
    let mut b = Node::new(root, "b", "data");
    a.start(false);
    b.start(true);
    a.add(&b);
    (a, b)
}

/// A primary and one mirror, formed through the primary.
pub fn primary_with_mirror(root: &Path, primary: &str, mirror: &str) -> (Node, Node) {
    let mut p = Node::new(root, primary, "data");
    let mut m = Node::new(root, mirror, "mirror");
    p.start(false);
    m.start(true);
    p.add(&m);
    (p, m)
}

/// Runs the CLI against `server`.
pub fn cli(server: &str, args: &[&str]) -> Output {
    Command::new(tandem_bin()).arg("--server").arg(server).args(args).output().expect("run tandem")
}

/// Runs `tandem --server SERVER ARGS` with `TANDEM_TOKEN=TOKEN`.
pub fn cli_with_token(server: &str, token: &str, args: &[&str]) -> Output {
    Command::new(tandem_bin())
        .arg("--server")
        .arg(server)
        .args(args)
        .env("TANDEM_TOKEN", token)
        .output()
        .expect("run tandem")
}
